"""MCP client for the end-to-end tests: the Python SDK (`mcp` 2.3) `Client`.
Usage: client.py URL MODE [TOKEN]   (MODE: 2026-07-28 or legacy)
Lists tools, calls `count` with progress, then `delete_note`; prints one JSON summary line."""
import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main() -> int:
    url, mode = sys.argv[1], sys.argv[2]
    token = sys.argv[3] if len(sys.argv) > 3 else None
    summary: dict = {}
    server = url
    if token:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        server = streamable_http_client(url, http_client=http)
    try:
        async with Client(server, mode=mode) as c:
            tools = await c.list_tools()
            summary["tools"] = sorted(t.name for t in tools.tools)
            progress = []

            async def on_progress(p, total, message):
                progress.append(p)

            r = await c.call_tool("count", {"n": 3}, progress_callback=on_progress)
            summary["count"] = r.content[0].text if r.content else None
            summary["progress"] = progress
            try:
                r = await c.call_tool("delete_note", {"title": "x"})
                summary["delete"] = {"ok": True, "isError": r.is_error}
            except Exception as e:  # the SDK raises on a JSON-RPC error
                err = getattr(e, "error", None)
                summary["delete"] = {
                    "ok": False,
                    "code": getattr(err, "code", None),
                    "message": getattr(err, "message", str(e)),
                }
    except Exception as e:
        summary["error"] = repr(e)
        print(json.dumps(summary))
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
