#!/usr/bin/env python3
"""Soak driver: mixed traffic and faults against one tailbridge for DURATION seconds, sampling
the bridge's resident memory and open descriptors every 10 s.
Usage: soak.py BRIDGE_PORT BRIDGE_PID DURATION  → a Markdown table, then a JSON summary line.
Mix (each an asyncio worker loop): cached tokens, new active tokens, bad tokens from many
source addresses in 127.0.0.0/8, SSE streams abandoned after the first event, oversized
bodies cut off, half-sent requests, and tool calls a policy denies."""
import asyncio
import json
import os
import random
import sys
import time
import uuid

PORT, PID, DURATION = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}'
DENIED = b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_note","arguments":{}}}'
counts = {}


def rss_kib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds():
    return len(os.listdir(f"/proc/{PID}/fd"))


async def exchange(raw, local="127.0.0.1", read=True, close_after=None):
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT, local_addr=(local, 0))
    try:
        writer.write(raw)
        await writer.drain()
        if not read:
            await asyncio.sleep(close_after or 0)
            return "sent"
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        return head.split(b" ", 2)[1].decode()
    except Exception as e:  # noqa: BLE001 - every outcome is counted
        return type(e).__name__
    finally:
        writer.close()


def post(path, token, body=BODY, extra=b""):
    return (f"POST {path} HTTP/1.1\r\nHost: mcp.example.com\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


async def worker(kind, stop):
    while not stop.is_set():
        if kind == "cached":
            r = await exchange(post("/mcp/bench", "good-cached-token"))
        elif kind == "new":
            r = await exchange(post("/mcp/bench", f"good-{uuid.uuid4()}"))
        elif kind == "bad":
            local = f"127.0.{random.randint(1, 250)}.{random.randint(1, 250)}"
            r = await exchange(post("/mcp/bench", f"bad-{uuid.uuid4()}"), local=local)
        elif kind == "denied":
            r = await exchange(post("/mcp/bench", "good-cached-token", DENIED))
        elif kind == "stream":
            raw = (b"GET /mcp/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good-cached-token\r\n"
                   b"Accept: text/event-stream\r\n\r\n")
            r = await exchange(raw)  # the head arrives, then the stream is abandoned
        elif kind == "oversized":
            head = post("/mcp/bench", "good-cached-token", b"")
            head = head.replace(b"Content-Length: 0", b"Content-Length: 9000000")
            r = await exchange(head + b"x" * 65536)
        else:  # half-sent
            r = await exchange(post("/mcp/bench", "good-cached-token")[:60], read=False,
                               close_after=random.random())
        counts[f"{kind} {r}"] = counts.get(f"{kind} {r}", 0) + 1
        await asyncio.sleep(0.005)


async def main():
    stop = asyncio.Event()
    kinds = ["cached"] * 4 + ["new", "bad", "bad", "denied", "stream", "oversized", "half"]
    tasks = [asyncio.create_task(worker(k, stop)) for k in kinds]
    samples = []
    start = time.time()
    while time.time() - start < DURATION:
        samples.append((round(time.time() - start), rss_kib(), fds()))
        await asyncio.sleep(10)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(5)
    after = (round(time.time() - start), rss_kib(), fds())
    print("| t (s) | RSS (KiB) | open fds |")
    print("|---:|---:|---:|")
    for t, r, f in samples + [after]:
        print(f"| {t} | {r} | {f} |")
    warm = next((s for s in samples if s[0] >= 60), samples[-1])
    print(json.dumps({"rss_warm_kib": warm[1], "rss_end_kib": samples[-1][1],
                      "rss_growth_after_warmup_kib": samples[-1][1] - warm[1],
                      "fds_during": max(s[2] for s in samples), "fds_after_load": after[2],
                      "outcomes": counts}))


asyncio.run(main())
