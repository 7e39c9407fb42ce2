# Shared setup for the load scripts (sourced, not run): a work directory removed on exit with
# every started process, free ports, the nginx upstream answering a small JSON-RPC result,
# the 1 KB JSON POST body with its wrk script, and instruction counts under callgrind.

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

# The bearer token the auth rows send (the stub IdP calls every token active).
TOKEN=bench-token-0123456789abcdef

# auth_yaml IDP_PORT: the config's auth section against benches/idp_stub.py on that port.
auth_yaml() {
  cat <<YAML
auth:
  issuer: "http://127.0.0.1:$1"
  audience: "https://mcp.example.com"
  introspection_url: "http://127.0.0.1:$1/introspect"
  client_id: bench
  client_secret: bench
  allow_loopback_idp: true
YAML
}

# write_auth_script: $W/post-auth.lua, the bench POST with TOKEN as bearer (after
# write_post_script).
write_auth_script() {
  sed "s/^wrk.method = \"POST\"/wrk.method = \"POST\"\nwrk.headers[\"Authorization\"] = \"Bearer $TOKEN\"/" "$W/post.lua" > "$W/post-auth.lua"
}

# ir_per_request N PORT TOKEN CMD...: start CMD under callgrind (instrumentation off), wait for
# PORT, warm up with 200 requests (pools, caches, metric labels), then count instructions
# over N sequential keep-alive POSTs of the bench body (with TOKEN as bearer unless "-"),
# stop CMD and print the instructions per request (with IR_MALLOCS=1, then the malloc calls
# per request too). Counts are repeatable where wall-clock figures on these machines are not.
ir_per_request() {
  local n=$1 p=$2 token=$3; shift 3
  local cg; cg=$(mktemp -u "$W/cg.XXXXXX")
  local auth=(); [ "$token" != "-" ] && auth=("$token")
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$cg.%p" "$@" >/dev/null 2>"$cg.stderr" & local vp=$!
  PIDS+=($vp)
  for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
  python3 benches/seq.py "$p" 200 "$W/body.json" "${auth[@]}"
  callgrind_control -i on "$vp" >/dev/null 2>&1
  python3 benches/seq.py "$p" "$n" "$W/body.json" "${auth[@]}"
  callgrind_control -i off "$vp" >/dev/null 2>&1
  callgrind_control -d "$vp" >/dev/null 2>&1
  # The counts are dumped: no graceful shutdown needed.
  kill -KILL "$vp"; wait "$vp" 2>/dev/null || true
  local total; total=$(cat "$cg".[0-9]* | awk '/^summary:/ {s+=$2} /^totals:/ {t+=$2} END {print (s>0?s:t)}')
  if [ "${IR_MALLOCS:-0}" = 1 ]; then
    local mallocs; mallocs=$(python3 benches/cg_calls.py malloc "$cg".[0-9]*)
    echo "$(( total / n )) $(awk -v m="$mallocs" -v n="$n" 'BEGIN { printf "%.1f", m / n }')"
  else
    echo $(( total / n ))
  fi
}
