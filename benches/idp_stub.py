#!/usr/bin/env python3
"""Introspection endpoint for the auth benchmark: every token is active for an hour, so after
the first request the bridge answers from its cache; tokens starting with `bad-` are inactive
(for the soak's bad-token traffic). Also serves AS metadata.
Usage: idp_stub.py PORT"""
import http.server
import json
import sys
import time


class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _json(self, doc):
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        form = self.rfile.read(int(self.headers.get("content-length", 0))).decode(errors="replace")
        if "token=bad-" in form:
            self._json({"active": False})
            return
        port = self.server.server_address[1]
        self._json({"active": True, "sub": "1", "client_id": "bench", "exp": int(time.time()) + 3600,
                    "iss": f"http://127.0.0.1:{port}", "aud": ["bench", "https://mcp.example.com/"]})

    def do_GET(self):
        port = self.server.server_address[1]
        self._json({"issuer": f"http://127.0.0.1:{port}", "authorization_endpoint": f"http://127.0.0.1:{port}/authorize",
                    "token_endpoint": f"http://127.0.0.1:{port}/token", "code_challenge_methods_supported": ["S256"]})


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
