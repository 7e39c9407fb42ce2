#!/usr/bin/env python3
"""Upstream for the SSE fan-out benchmark: every GET opens an event stream that sends one
event per second, each carrying the time it was written (ns since the epoch), so the client
can measure how long an event takes to arrive. A POST (an MCP tools/call or tools/list)
gets the same stream with each event shaped as a JSON-RPC progress notification, so the
MCP layer reads every event as it would a real tool's. Usage: sse_upstream.py PORT"""
import asyncio
import sys
import time


async def handle(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            # Read the request head (and a POST's body).
            length = 0
            while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                if h.lower().startswith(b"content-length:"):
                    length = int(h.split(b":")[1])
            if length:
                await reader.readexactly(length)
            post = line.startswith(b"POST")
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            while True:
                if post:
                    data = ('event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress",'
                            f'"params":{{"progressToken":1,"progress":{time.time_ns()}}}}}\n\n').encode()
                else:
                    data = f"data: {time.time_ns()}\n\n".encode()
                writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                await writer.drain()
                await asyncio.sleep(1)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
