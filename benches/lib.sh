# Shared setup for the load scripts (sourced, not run): a work directory removed on exit with
# every started process, free ports, the nginx upstream answering a small JSON-RPC result,
# and the 1 KB JSON POST body with its wrk script.

W=$(mktemp -d "/tmp/tailbridge-${BENCH_NAME:-bench}.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# start_upstream PORT: nginx (one worker) answering every request with a small JSON-RPC result.
start_upstream() {
  mkdir -p "$W/nginx-up"
  cat > "$W/nginx-up/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $W/nginx-up/pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off;
  client_body_temp_path $W/nginx-up; proxy_temp_path $W/nginx-up;
  server { listen 127.0.0.1:$1; keepalive_requests 1000000;
    location / { default_type application/json; client_body_buffer_size 16k;
      return 200 '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}'; } } }
CONF
  nginx -p "$W/nginx-up" -c "$W/nginx-up/nginx.conf" & PIDS+=($!)
}

# write_post_script: $W/body.json (a 1 KB tools/call) and $W/post.lua (wrk POSTs it).
write_post_script() {
  head -c 1024 /dev/zero | tr '\0' 'x' | python3 -c 'import sys,json; print(json.dumps({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":sys.stdin.read()[:960]}}}))' > "$W/body.json"
  cat > "$W/post.lua" <<LUA
local f = io.open("$W/body.json"); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
LUA
}
