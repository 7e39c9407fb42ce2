#!/usr/bin/env python3
"""N sequential keep-alive POSTs of a body to 127.0.0.1:PORT/mcp/bench, for instruction
counts (callgrind). Usage: seq.py PORT N BODY_FILE [BEARER_TOKEN]"""
import http.client
import sys

port, n, body = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3], "rb").read()
headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
if len(sys.argv) > 4:
    headers["Authorization"] = "Bearer " + sys.argv[4]
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("POST", "/mcp/bench", body, headers)
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
