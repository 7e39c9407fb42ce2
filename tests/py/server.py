"""MCP upstream for the end-to-end tests: the Python SDK (`mcp` 2.3) streamable HTTP server,
which speaks both 2026-07-28 and 2025-11-25. Bound to 127.0.0.1 on $PORT; prints
`listening <port>` once it accepts connections. Every tool it runs is appended to the file
named by $CALLS_FILE, one name per line, so a test can prove a refused call never arrived.
With $TRACE_FILE set, `count` also appends the trace context its MCP span runs in (the SDK's
OpenTelemetry middleware takes it from `params._meta`), one JSON object per line."""
import json
import os
import socket
import sys
import threading
import time

from mcp.server.mcpserver import Context, MCPServer

calls_file = os.environ.get("CALLS_FILE", os.devnull)
trace_file = os.environ.get("TRACE_FILE")
app = MCPServer("py-upstream")


def record(name: str) -> None:
    with open(calls_file, "a") as f:
        f.write(name + "\n")


@app.tool()
def echo(text: str) -> str:
    """Echoes its input."""
    record("echo")
    return text


@app.tool()
async def count(n: int, ctx: Context) -> str:
    """Counts to n, reporting progress at each step."""
    record("count")
    if trace_file:
        from opentelemetry import trace

        sc = trace.get_current_span().get_span_context()
        with open(trace_file, "a") as f:
            line = {"trace_id": format(sc.trace_id, "032x"), "span_id": format(sc.span_id, "016x")}
            f.write(json.dumps(line) + "\n")
    import anyio

    for i in range(1, n + 1):
        await ctx.report_progress(i, n)
        await anyio.sleep(0.02)
    return f"counted to {n}"


@app.tool()
def delete_note(title: str) -> str:
    """Deletes a note."""
    record("delete_note")
    return f"deleted {title}"


def main() -> None:
    port = int(os.environ["PORT"])

    def announce() -> None:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                print(f"listening {port}", flush=True)
                return
            except OSError:
                time.sleep(0.05)

    threading.Thread(target=announce, daemon=True).start()
    app.run(transport="streamable-http", host="127.0.0.1", port=port)


if __name__ == "__main__":
    sys.exit(main())
