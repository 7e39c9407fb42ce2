#!/usr/bin/env bash
# Whole-proxy load comparison, in one run, with one load tool (wrk):
#   direct (wrk → upstream), tailbridge, nginx and Caddy (all from apt), each pinned to ONE
#   worker, access logs off, no response buffering.
# Workloads: a 1 KB JSON POST (throughput, latency) and SSE fan-out (resident memory per
# open stream, event latency).
# Usage: bash benches/load.sh [duration_seconds=10] [sse_streams=1000]
# Needs: wrk nginx caddy python3 (apt-get install -y wrk nginx-light caddy) and a release
# build (cargo build --release). Results: benches/results/latest.md
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
STREAMS=${2:-1000}
BIN=target/release/tailbridge
for t in wrk nginx caddy python3; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
[ -x "$BIN" ] || cargo build --release
ulimit -n 65536 2>/dev/null || true

. benches/lib.sh
UP=$(port); SSE=$(port); TB=$(port); TBA=$(port); NG=$(port); CA=$(port); IDP=$(port); TBX=$(port); TBXA=$(port)
mkdir -p "$W/nginx-proxy"

start_upstream "$UP"
python3 benches/sse_upstream.py "$SSE" & PIDS+=($!)

# tailbridge
cat > "$W/tb.yaml" <<CONF
server: { listen: "127.0.0.1:$TB", threads: 1, pid_file: "$W/tb.pid", upgrade_sock: "$W/tb.sock" }
admin: { listen: "127.0.0.1:$TBA" }
tailnet: { mode: direct }
log: { access_log: false, level: warn }
endpoints:
  - { path: /mcp/bench, target: "http://127.0.0.1:$UP/mcp" }
  - { path: /mcp/sse, target: "http://127.0.0.1:$SSE/sse" }
CONF
"$BIN" --config "$W/tb.yaml" & TB_PID=$!; PIDS+=($TB_PID)

# tailbridge with auth against a stub IdP: after the first request every token is a cache hit.
python3 benches/idp_stub.py "$IDP" & PIDS+=($!)
cat > "$W/tbx.yaml" <<CONF
server: { listen: "127.0.0.1:$TBX", threads: 1, pid_file: "$W/tbx.pid", upgrade_sock: "$W/tbx.sock" }
admin: { listen: "127.0.0.1:$TBXA" }
tailnet: { mode: direct }
log: { access_log: false, level: error }
auth:
  issuer: "http://127.0.0.1:$IDP"
  audience: "https://mcp.example.com"
  introspection_url: "http://127.0.0.1:$IDP/introspect"
  client_id: bench
  client_secret: bench
  allow_loopback_idp: true
endpoints:
  - { path: /mcp/bench, target: "http://127.0.0.1:$UP/mcp" }
CONF
"$BIN" --config "$W/tbx.yaml" & PIDS+=($!)

# nginx as a reverse proxy, configured the way an operator would for MCP.
cat > "$W/nginx-proxy/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $W/nginx-proxy/pid; error_log stderr error;
events { worker_connections 8192; }
http { access_log off;
  client_body_temp_path $W/nginx-proxy; proxy_temp_path $W/nginx-proxy;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  upstream sse { server 127.0.0.1:$SSE; keepalive 64; }
  server { listen 127.0.0.1:$NG; keepalive_requests 1000000;
    location /mcp/sse { proxy_pass http://sse/sse; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; proxy_read_timeout 1h; }
    location /mcp/bench { proxy_pass http://up/mcp; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; } } }
CONF
nginx -p "$W/nginx-proxy" -c "$W/nginx-proxy/nginx.conf" & NG_PID=$!; PIDS+=($NG_PID)

# Caddy with flush_interval -1, one OS thread for Go code (GOMAXPROCS=1).
cat > "$W/Caddyfile" <<CONF
{
	admin off
	auto_https off
}
http://127.0.0.1:$CA {
	reverse_proxy /mcp/sse* 127.0.0.1:$SSE {
		flush_interval -1
	}
	reverse_proxy /mcp/bench* 127.0.0.1:$UP {
		flush_interval -1
	}
}
CONF
GOMAXPROCS=1 HOME=$W XDG_DATA_HOME=$W XDG_CONFIG_HOME=$W caddy run --config "$W/Caddyfile" --adapter caddyfile >"$W/caddy.log" 2>&1 & CA_PID=$!; PIDS+=($CA_PID)

for p in $UP $SSE $TB $NG $CA $IDP $TBX; do wait_port $p; done

write_post_script
sed 's/^wrk.method = "POST"/wrk.method = "POST"\nwrk.headers["Authorization"] = "Bearer bench-token-0123456789abcdef"/' "$W/post.lua" > "$W/post-auth.lua"

run_wrk() { # name url [script]
  local script=${3:-$W/post.lua}
  wrk -t1 -c32 -d2s -s "$script" "$2" >/dev/null 2>&1 || true   # warm-up
  local out; out=$(wrk -t1 -c32 -d"${DUR}s" --latency -s "$script" "$2")
  local rps p50 p99 non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}'); non2xx=${non2xx:-0}
  printf "| %-10s | %10s | %8s | %8s | %6s |\n" "$1" "$rps" "$p50" "$p99" "$non2xx"
}

{
echo "## Run $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), nginx $(nginx -v 2>&1 | cut -d/ -f2), caddy $(caddy version | cut -d' ' -f1), tailbridge $($BIN --version | cut -d' ' -f2)"
echo
echo "### 1 KB JSON POST, wrk -t1 -c32 -d${DUR}s, every proxy on one worker"
echo
echo "| target     |  req/s     | p50      | p99      | non-2xx |"
echo "|------------|-----------:|---------:|---------:|-------:|"
run_wrk direct "http://127.0.0.1:$UP/mcp"
run_wrk tailbridge "http://127.0.0.1:$TB/mcp/bench"
run_wrk "tb+auth" "http://127.0.0.1:$TBX/mcp/bench" "$W/post-auth.lua"
run_wrk nginx "http://127.0.0.1:$NG/mcp/bench"
run_wrk caddy "http://127.0.0.1:$CA/mcp/bench"
echo
echo "tb+auth: tailbridge with token validation on; every request carries the same bearer token, so all but the first are token-cache hits."
echo
echo "### SSE fan-out: $STREAMS concurrent streams, one event per second per stream"
echo
echo "| proxy      | RSS before (KiB) | RSS with streams (KiB) | KiB/stream | event latency p50 (ms) | p99 (ms) |"
echo "|------------|-----------------:|-----------------------:|-----------:|-----------------------:|---------:|"
for row in "tailbridge $TB $TB_PID" "nginx $NG $(cat $W/nginx-proxy/pid)" "caddy $CA $CA_PID"; do
  set -- $row
  # nginx's memory is in its worker process.
  pid=$3; [ "$1" = nginx ] && pid=$(pgrep -P "$3" | head -1)
  j=$(python3 benches/sse_fanout.py "http://127.0.0.1:$2/mcp/sse" "$STREAMS" "$pid")
  python3 -c "import json,sys; d=json.loads(sys.argv[2]); print('| %-10s | %16d | %22d | %10.2f | %22s | %8s |' % (sys.argv[1], d['rss_before_kib'], d['rss_with_streams_kib'], d['kib_per_stream'], d['event_latency_ms_p50'], d['event_latency_ms_p99']))" "$1" "$j"
  sleep 1
done
} | tee "$W/result.md"
mkdir -p benches/results
cp "$W/result.md" benches/results/latest.md
