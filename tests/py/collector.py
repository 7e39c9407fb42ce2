"""An OpenTelemetry collector STAND-IN for the tracing tests (a real collector binary is not
installable here): it decodes OTLP/HTTP protobuf with the official proto definitions
(PyPI `opentelemetry-proto`) and keeps every span it received.

Usage: collector.py [MODE]   (MODE: ok, the default; hang: read each export and never answer)
Bound to 127.0.0.1 on a free port; prints `listening <port>` once it accepts connections.
  POST /v1/traces   ExportTraceServiceRequest (application/x-protobuf) -> 200 with an empty
                    ExportTraceServiceResponse
  GET  /spans       the spans so far, as a JSON list (ids in lowercase hex)
  GET  /requests    what each export request looked like (path, content type, headers)
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

MODE = sys.argv[1] if len(sys.argv) > 1 else "ok"
LOCK = threading.Lock()
SPANS: list = []
REQUESTS: list = []


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def decode(body: bytes) -> list:
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    out = []
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    {
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "name": s.name,
                        "kind": Span.SpanKind.Name(s.kind).removeprefix("SPAN_KIND_"),
                        "attributes": attributes(s.attributes),
                        "status": Status.StatusCode.Name(s.status.code).removeprefix("STATUS_CODE_"),
                        "status_message": s.status.message,
                        "events": [e.name for e in s.events],
                        "links": [
                            {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()}
                            for link in s.links
                        ],
                        "start_ns": s.start_time_unix_nano,
                        "end_ns": s.end_time_unix_nano,
                        "resource": resource,
                        "scope": ss.scope.name,
                    }
                )
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with LOCK:
            data = {"/spans": SPANS, "/requests": REQUESTS}.get(self.path)
            body = json.dumps(data).encode() if data is not None else None
        if body is None:
            self.reply(404, "text/plain", b"no such path")
        else:
            self.reply(200, "application/json", body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        with LOCK:
            REQUESTS.append(
                {
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                }
            )
        if MODE == "hang":
            time.sleep(3600)
            return
        if self.path != "/v1/traces":
            self.reply(404, "text/plain", b"no such path")
            return
        try:
            spans = decode(body)
        except Exception as e:  # not OTLP protobuf: the bridge sent something wrong
            self.reply(400, "text/plain", str(e).encode())
            return
        with LOCK:
            SPANS.extend(spans)
        self.reply(200, "application/x-protobuf", ExportTraceServiceResponse().SerializeToString())


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
