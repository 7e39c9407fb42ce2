#!/usr/bin/env bash
# Whole-proxy load comparison, in one run, with one load tool (wrk). Targets, each pinned to
# ONE worker, no response buffering:
#   direct       wrk → upstream
#   bare         a bare Pingora proxy built from this repository (examples/bare_pingora.rs):
#                the ceiling Pingora itself sets
#   tb-min       tailbridge, auth off, access and audit logs off
#   tb-logs      tailbridge defaults without auth: access and audit logs on, to a file
#   tb-prod      production defaults: auth on (every request a token-cache hit), access and
#                audit logs on, to a file (as journald would get them through a pipe)
#   nginx, caddy from apt, configured the way an operator would for MCP
# The throughput rounds run every target in turn, ROUNDS times (round-robin, so a noisy
# neighbour hits every row alike); ratios are taken within a round. Instructions per
# request come from callgrind over a fixed number of sequential requests: repeatable where
# wall-clock figures are not. SSE fan-out reports resident memory per open stream and event
# latency.
# Usage: bash benches/load.sh [duration_seconds=10] [sse_streams=1000] [rounds=2]
#        CALLGRIND_REQUESTS=2000; 0 rounds, 0 streams or 0 requests skip that part
# Needs: wrk nginx caddy python3 valgrind (apt-get install -y wrk nginx-light caddy valgrind)
# and release builds (cargo build --release --bin tailbridge --example bare_pingora).
# Results: benches/results/latest.md
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
STREAMS=${2:-1000}
ROUNDS=${3:-2}
N=${CALLGRIND_REQUESTS:-2000}
BIN=target/release/tailbridge
BARE=target/release/examples/bare_pingora
for t in wrk nginx caddy python3 valgrind callgrind_control; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
[ -x "$BIN" ] && [ -x "$BARE" ] || cargo build --release --bin tailbridge --example bare_pingora
ulimit -n 65536 2>/dev/null || true

. benches/lib.sh
UP=$(port); SSE=$(port); IDP=$(port); NG=$(port); CA=$(port); BARE_P=$(port); BARE_S=$(port)
mkdir -p "$W/nginx-proxy"
start_upstream "$UP"
python3 benches/sse_upstream.py "$SSE" & PIDS+=($!)
python3 benches/idp_stub.py "$IDP" & PIDS+=($!)
write_post_script
write_auth_script

# tb_config NAME AUTH(0|1) LOG(quiet|default) → $W/NAME.yaml on a fresh port; prints the port.
tb_config() {
  local p a log auth=""; p=$(port); a=$(port)
  case $3 in
    quiet) log='{ access_log: false, level: warn, audit: { enabled: false } }' ;;
    default) log='{ level: info }' ;;
  esac
  [ "$2" = 1 ] && auth=$(auth_yaml "$IDP")
  cat > "$W/$1.yaml" <<CONF
server: { listen: "127.0.0.1:$p", threads: 1, pid_file: "$W/$1.pid", upgrade_sock: "$W/$1.sock", grace_period: 1s, shutdown_timeout: 1s }
admin: { listen: "127.0.0.1:$a" }
tailnet: { mode: direct }
log: $log
$auth
endpoints:
  - { path: /mcp/bench, target: "http://127.0.0.1:$UP/mcp" }
  - { path: /mcp/sse, target: "http://127.0.0.1:$SSE/sse" }
CONF
  echo "$p"
}
TB_MIN=$(tb_config tb-min 0 quiet)
TB_LOGS=$(tb_config tb-logs 0 default)
TB_PROD=$(tb_config tb-prod 1 default)
"$BIN" --config "$W/tb-min.yaml" 2>"$W/tb-min.log" & TB_MIN_PID=$!; PIDS+=($TB_MIN_PID)
"$BIN" --config "$W/tb-logs.yaml" 2>"$W/tb-logs.log" & TB_LOGS_PID=$!; PIDS+=($TB_LOGS_PID)
"$BIN" --config "$W/tb-prod.yaml" 2>"$W/tb-prod.log" & PIDS+=($!)
"$BARE" "127.0.0.1:$BARE_P" "127.0.0.1:$UP" 1 2>/dev/null & PIDS+=($!)
"$BARE" "127.0.0.1:$BARE_S" "127.0.0.1:$SSE" 1 2>/dev/null & BARE_S_PID=$!; PIDS+=($BARE_S_PID)

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

for p in $UP $SSE $IDP $TB_MIN $TB_LOGS $TB_PROD $BARE_P $BARE_S $NG $CA; do wait_port "$p"; done

TARGETS=(direct bare tb-min tb-logs tb-prod nginx caddy)
declare -A URL=(
  [direct]="http://127.0.0.1:$UP/mcp" [bare]="http://127.0.0.1:$BARE_P/mcp/bench"
  [tb-min]="http://127.0.0.1:$TB_MIN/mcp/bench" [tb-logs]="http://127.0.0.1:$TB_LOGS/mcp/bench"
  [tb-prod]="http://127.0.0.1:$TB_PROD/mcp/bench" [nginx]="http://127.0.0.1:$NG/mcp/bench"
  [caddy]="http://127.0.0.1:$CA/mcp/bench")
declare -A RPS

run_wrk() { # round target
  local script=$W/post.lua; [ "$2" = tb-prod ] && script=$W/post-auth.lua
  wrk -t1 -c32 -d2s -s "$script" "${URL[$2]}" >/dev/null 2>&1 || true   # warm-up
  local out; out=$(wrk -t1 -c32 -d"${DUR}s" --latency -s "$script" "${URL[$2]}")
  local rps p50 p99 non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}'); non2xx=${non2xx:-0}
  RPS[$1,$2]=$rps
  printf "| %d | %-8s | %10s | %8s | %8s | %6s |\n" "$1" "$2" "$rps" "$p50" "$p99" "$non2xx"
}
ratio() { python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2"; }

{
echo "## Run $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), nginx $(nginx -v 2>&1 | cut -d/ -f2), caddy $(caddy version | cut -d' ' -f1), valgrind $(valgrind --version | cut -d- -f2), tailbridge $($BIN --version | cut -d' ' -f2)"
echo
if [ "$ROUNDS" -gt 0 ]; then
echo "### 1 KB JSON POST, wrk -t1 -c32 -d${DUR}s, every proxy on one worker, $ROUNDS rounds"
echo
echo "| round | target | req/s | p50 | p99 | non-2xx |"
echo "|---|---|---:|---:|---:|---:|"
for r in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do run_wrk "$r" "$t"; done
done
echo
echo "### Ratios within each round"
echo
echo "| round | tb-min / bare | tb-logs / bare | tb-prod / bare | bare / nginx | tb-prod / nginx |"
echo "|---|---:|---:|---:|---:|---:|"
for r in $(seq "$ROUNDS"); do
  printf "| %d | %s | %s | %s | %s | %s |\n" "$r" \
    "$(ratio "${RPS[$r,tb-min]}" "${RPS[$r,bare]}")" "$(ratio "${RPS[$r,tb-logs]}" "${RPS[$r,bare]}")" \
    "$(ratio "${RPS[$r,tb-prod]}" "${RPS[$r,bare]}")" "$(ratio "${RPS[$r,bare]}" "${RPS[$r,nginx]}")" \
    "$(ratio "${RPS[$r,tb-prod]}" "${RPS[$r,nginx]}")"
done
fi
if [ "$N" -gt 0 ]; then
  echo
  echo "### Instructions per request (callgrind, $N sequential keep-alive requests after 200 warm-up)"
  echo
  echo "| target | instructions / request | vs bare |"
  echo "|---|---:|---:|"
  BP=$(port); BARE_IR=$(ir_per_request "$N" "$BP" - "$BARE" "127.0.0.1:$BP" "127.0.0.1:$UP" 1)
  printf "| bare | %d | 1.00 |\n" "$BARE_IR"
  for row in "tb-min 0 quiet -" "tb-logs 0 default -" "tb-prod 1 default $TOKEN"; do
    set -- $row
    p=$(tb_config "cg-$1" "$2" "$3")
    ir=$(ir_per_request "$N" "$p" "$4" "$BIN" --config "$W/cg-$1.yaml")
    printf "| %s | %d | %s |\n" "$1" "$ir" "$(ratio "$ir" "$BARE_IR")"
  done
fi
if [ "$STREAMS" -gt 0 ]; then
echo
echo "### SSE fan-out: $STREAMS concurrent streams, one event per second per stream"
echo
echo "| proxy | RSS before (KiB) | RSS with streams (KiB) | KiB/stream | event latency p50 (ms) | p99 (ms) |"
echo "|---|---:|---:|---:|---:|---:|"
for row in "bare $BARE_S $BARE_S_PID" "tb-logs $TB_LOGS $TB_LOGS_PID" "nginx $NG $(cat $W/nginx-proxy/pid)" "caddy $CA $CA_PID"; do
  set -- $row
  # nginx's memory is in its worker process.
  pid=$3; [ "$1" = nginx ] && pid=$(pgrep -P "$3" | head -1)
  j=$(python3 benches/sse_fanout.py "http://127.0.0.1:$2/mcp/sse" "$STREAMS" "$pid")
  python3 -c "import json,sys; d=json.loads(sys.argv[2]); print('| %s | %d | %d | %.2f | %s | %s |' % (sys.argv[1], d['rss_before_kib'], d['rss_with_streams_kib'], d['kib_per_stream'], d['event_latency_ms_p50'], d['event_latency_ms_p99']))" "$1" "$j"
  sleep 1
done
fi
echo
echo "Access log lines written by tb-prod: $(grep -c 'tailbridge::access' "$W/tb-prod.log" || true); audit lines: $(grep -c 'tailbridge::audit' "$W/tb-prod.log" || true)."
} | tee "$W/result.md"
mkdir -p benches/results
cp "$W/result.md" benches/results/latest.md
