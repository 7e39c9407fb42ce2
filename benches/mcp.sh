#!/usr/bin/env bash
# The MCP layer's cost, in one run: tailbridge with no tool policy (the layer reads each POST,
# counts it and audits tools/call) against tailbridge with a policy in force (deny
# ["delete_*"]: every call is judged, tools/list results are filtered), and the same with
# the audit log on, written to a file as journald would receive it.
#   1. throughput: wrk -t1 -c32, a 1 KB tools/call POST, one worker each;
#   2. instructions per request: valgrind --tool=callgrind, counting only while a fixed number
#      of sequential keep-alive requests run (repeatable on noisy machines; wall-clock is not);
#   3. SSE event latency through POST response streams (tools/call and tools/list), policy
#      off and on, 200 concurrent streams.
# Usage: bash benches/mcp.sh [duration_seconds=10] [callgrind_requests=2000]
# Needs: wrk nginx python3 valgrind (apt-get install -y wrk nginx-light valgrind) and a release
# build. Results: benches/results/mcp-latest.md
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
N=${2:-2000}
BIN=target/release/tailbridge
for t in wrk nginx python3 valgrind callgrind_control; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
[ -x "$BIN" ] || cargo build --release
ulimit -n 65536 2>/dev/null || true
BENCH_NAME=mcp
. benches/lib.sh
UP=$(port); SSE=$(port)
start_upstream "$UP"
python3 benches/sse_upstream.py "$SSE" & PIDS+=($!)
write_post_script

# config NAME TOOLS_YAML LOG_YAML → $W/NAME.yaml on fresh ports; echo "port admin_port"
config() {
  local p a; p=$(port); a=$(port)
  cat > "$W/$1.yaml" <<CONF
server: { listen: "127.0.0.1:$p", threads: 1, pid_file: "$W/$1.pid", upgrade_sock: "$W/$1.sock", grace_period: 1s, shutdown_timeout: 1s }
admin: { listen: "127.0.0.1:$a" }
tailnet: { mode: direct }
log: $3
endpoints:
  - { path: /mcp/bench, target: "http://127.0.0.1:$UP/mcp"$2 }
  - { path: /mcp/sse, target: "http://127.0.0.1:$SSE/sse"$2 }
CONF
  echo "$p"
}
QUIET='{ access_log: false, level: warn }'
AUDIT='{ access_log: false, level: "warn,tailbridge::audit=info" }'
POLICY=', tools: { deny: ["delete_*"] }'
OFF=$(config off "" "$QUIET")
ON=$(config on "$POLICY" "$QUIET")
ONA=$(config on-audit "$POLICY" "$AUDIT")
"$BIN" --config "$W/off.yaml" 2>/dev/null & OFF_PID=$!; PIDS+=($OFF_PID)
"$BIN" --config "$W/on.yaml" 2>/dev/null & ON_PID=$!; PIDS+=($ON_PID)
"$BIN" --config "$W/on-audit.yaml" 2>"$W/audit.log" & PIDS+=($!)
for p in $UP $SSE $OFF $ON $ONA; do wait_port "$p"; done

run_wrk() { # name url
  wrk -t1 -c32 -d2s -s "$W/post.lua" "$2" >/dev/null 2>&1 || true   # warm-up
  local out; out=$(wrk -t1 -c32 -d"${DUR}s" --latency -s "$W/post.lua" "$2")
  printf "| %-28s | %10s | %8s | %8s |\n" "$1" \
    "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" \
    "$(echo "$out" | awk '$1=="50%" {print $2}')" "$(echo "$out" | awk '$1=="99%" {print $2}')"
}

cg_row() { # name config
  local p; p=$(sed -n 's/.*listen: "127.0.0.1:\([0-9]*\)".*/\1/p' "$W/$2.yaml" | head -1)
  # A fresh instance under valgrind on the same ports (the plain one is stopped first).
  printf "| %-28s | %12d |\n" "$1" "$(ir_per_request "$N" "$p" - "$BIN" --config "$W/$2.yaml")"
}

{
echo "## MCP layer run $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), valgrind $(valgrind --version | cut -d- -f2), tailbridge $($BIN --version | cut -d' ' -f2)"
echo
echo "### 1 KB tools/call POST, wrk -t1 -c32 -d${DUR}s, one worker"
echo
echo "| tailbridge                   |  req/s     | p50      | p99      |"
echo "|------------------------------|-----------:|---------:|---------:|"
run_wrk "no tool policy" "http://127.0.0.1:$OFF/mcp/bench"
run_wrk "policy in force" "http://127.0.0.1:$ON/mcp/bench"
run_wrk "policy in force + audit log" "http://127.0.0.1:$ONA/mcp/bench"
echo
echo "### SSE event latency through POST response streams, 200 streams, one event/s each"
echo
echo "| tailbridge, request          | event latency p50 (ms) | p99 (ms) |"
echo "|------------------------------|-----------------------:|---------:|"
for row in "off tools/call $OFF $OFF_PID" "on tools/call $ON $ON_PID" "on tools/list $ON $ON_PID"; do
  set -- $row
  j=$(python3 benches/sse_fanout.py "http://127.0.0.1:$3/mcp/sse" 200 "$4" "$2")
  python3 -c "import json,sys; d=json.loads(sys.argv[3]); print('| %-28s | %22s | %8s |' % ('policy ' + sys.argv[1] + ', ' + sys.argv[2], d['event_latency_ms_p50'], d['event_latency_ms_p99']))" "$1" "$2" "$j"
done
echo
echo "### Instructions per request (callgrind, $N sequential keep-alive requests after 200 warm-up)"
echo
echo "| tailbridge                   | instructions |"
echo "|------------------------------|-------------:|"
kill "$OFF_PID" "$ON_PID" 2>/dev/null || true; sleep 1.5
cg_row "no tool policy" off
cg_row "policy in force" on
} | tee "$W/result.md"
mkdir -p benches/results
cp "$W/result.md" benches/results/mcp-latest.md
