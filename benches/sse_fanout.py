#!/usr/bin/env python3
"""SSE fan-out client: opens N concurrent event streams to URL, waits until every stream has
delivered an event, then samples the resident memory of PID and measures event latency
(upstream write time to client receipt) over a few seconds.
Usage: sse_fanout.py URL N PID [METHOD]  → prints one JSON line. METHOD tools/call or
tools/list POSTs that JSON-RPC request instead of a GET (an MCP POST response stream)."""
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def stream(host, port, path, latencies, ready, stop, method=None):
    reader, writer = await asyncio.open_connection(host, port)
    if method:
        params = ',"params":{"name":"count","arguments":{}}' if method == "tools/call" else ""
        body = f'{{"jsonrpc":"2.0","id":1,"method":"{method}"{params}}}'.encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json, text/event-stream\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    else:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    first = True
    buf = b""
    while not stop.is_set():
        chunk = await reader.read(4096)
        if not chunk:
            break
        buf += chunk
        while b"data: " in buf and b"\n\n" in buf.split(b"data: ", 1)[1]:
            _, rest = buf.split(b"data: ", 1)
            value, buf = rest.split(b"\n\n", 1)
            if b'"progress":' in value:
                value = value.split(b'"progress":', 1)[1].split(b"}", 1)[0]
            try:
                sent = int(value.split(b"\r\n")[0])
            except ValueError:
                continue
            now = time.time_ns()
            if first:
                ready.release()
                first = False
            else:
                latencies.append((now - sent) / 1e6)
    writer.close()


async def main(url, n, pid, method=None):
    u = urlsplit(url)
    latencies = []
    ready = asyncio.Semaphore(0)
    stop = asyncio.Event()
    base = rss_kib(pid)
    tasks = [asyncio.create_task(stream(u.hostname, u.port, u.path or "/", latencies, ready, stop, method)) for _ in range(n)]
    for _ in range(n):
        await asyncio.wait_for(ready.acquire(), 60)
    await asyncio.sleep(3)
    loaded = rss_kib(pid)
    stop.set()
    for t in tasks:
        t.cancel()
    latencies.sort()
    pct = lambda p: round(latencies[min(len(latencies) - 1, int(len(latencies) * p))], 3) if latencies else None
    print(json.dumps({
        "streams": n,
        "rss_before_kib": base,
        "rss_with_streams_kib": loaded,
        "kib_per_stream": round((loaded - base) / n, 2),
        "event_latency_ms_p50": pct(0.5),
        "event_latency_ms_p99": pct(0.99),
        "events": len(latencies),
    }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None))
