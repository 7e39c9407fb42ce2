#!/usr/bin/env bash
# Tracing's cost, in one run (#22): tailbridge with tracing off, on at sample_ratio 0 (no new
# trace recorded: every request still starts its spans, samples them out and sends a
# traceparent upstream, with trace context added to params._meta) and on at sample_ratio 1
# (every request's spans recorded and exported), against the same upstream. The "collector"
# is the nginx upstream itself: it answers the OTLP POSTs to /v1/traces with 200, as a
# collector would, so the export (protobuf encoding, the HTTP POSTs) is measured too.
#   1. instructions and malloc calls per request: callgrind over N sequential keep-alive
#      requests, all threads counted (the export thread's included);
#   2. throughput: wrk -t1 -c32, a 1 KB tools/call POST, one worker, the targets taken
#      round-robin `rounds` times (compare rows of one round: the machine's noise is large).
# BASE_BIN=path adds rows for a build without tracing (main before #22): "off" must cost what
# that build costs.
# Usage: [BASE_BIN=...] bash benches/trace.sh [duration_seconds=10] [callgrind_requests=2000] [rounds=2]
# Needs: wrk nginx python3 valgrind (apt-get install -y wrk nginx-light valgrind) and a release
# build. Results: benches/results/trace-latest.md
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
N=${2:-2000}
ROUNDS=${3:-2}
BIN=${BIN:-target/release/tailbridge}
BASE_BIN=${BASE_BIN:-}
for t in wrk nginx python3 valgrind callgrind_control; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
[ -x "$BIN" ] || cargo build --release
ulimit -n 65536 2>/dev/null || true
BENCH_NAME=trace
. benches/lib.sh
UP=$(port)
start_upstream "$UP"
write_post_script

# config NAME TRACING_YAML → $W/NAME.yaml on fresh ports; echo the port
config() {
  local p a; p=$(port); a=$(port)
  cat > "$W/$1.yaml" <<CONF
server: { listen: "127.0.0.1:$p", threads: 1, pid_file: "$W/$1.pid", upgrade_sock: "$W/$1.sock", grace_period: 1s, shutdown_timeout: 1s }
admin: { listen: "127.0.0.1:$a" }
tailnet: { mode: direct }
log: { access_log: false, level: warn }
$2
endpoints:
  - { path: /mcp/bench, target: "http://127.0.0.1:$UP/mcp" }
CONF
  echo "$p"
}
# The environment must not switch tracing on for the "off" rows.
unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT OTEL_SDK_DISABLED || true
OFF=$(config off "")
R0=$(config ratio0 "tracing: { otlp_endpoint: \"http://127.0.0.1:$UP\", sample_ratio: 0 }")
R1=$(config ratio1 "tracing: { otlp_endpoint: \"http://127.0.0.1:$UP\", sample_ratio: 1 }")
BASE=""
PIDS_RUN=()
start() { "$1" --config "$W/$2.yaml" 2>"$W/$2.log" & PIDS+=($!); PIDS_RUN+=($!); }
if [ -n "$BASE_BIN" ]; then BASE=$(config base ""); start "$BASE_BIN" base; fi
start "$BIN" off; start "$BIN" ratio0; start "$BIN" ratio1
for p in $UP $OFF $R0 $R1 $BASE; do wait_port "$p"; done

run_wrk() { # name url
  wrk -t1 -c32 -d2s -s "$W/post.lua" "$2" >/dev/null 2>&1 || true   # warm-up
  local out; out=$(wrk -t1 -c32 -d"${DUR}s" --latency -s "$W/post.lua" "$2")
  printf "| %-32s | %10s | %8s | %8s |\n" "$1" \
    "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" \
    "$(echo "$out" | awk '$1=="50%" {print $2}')" "$(echo "$out" | awk '$1=="99%" {print $2}')"
}

cg_row() { # name binary config
  local p; p=$(sed -n 's/.*listen: "127.0.0.1:\([0-9]*\)".*/\1/p' "$W/$3.yaml" | head -1)
  local r; r=$(IR_MALLOCS=1 ir_per_request "$N" "$p" - "$2" --config "$W/$3.yaml")
  set -- "$1" $r
  printf "| %-32s | %12d | %12s |\n" "$1" "$2" "$3"
}

{
echo "## Tracing run $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), valgrind $(valgrind --version | cut -d- -f2), tailbridge $($BIN --version | cut -d' ' -f2)"
echo
echo "### 1 KB tools/call POST, wrk -t1 -c32 -d${DUR}s, one worker"
echo
echo "| tailbridge                       |  req/s     | p50      | p99      |"
echo "|----------------------------------|-----------:|---------:|---------:|"
for r in $(seq "$ROUNDS"); do
  [ -n "$BASE" ] && run_wrk "r$r without tracing (BASE_BIN)" "http://127.0.0.1:$BASE/mcp/bench"
  run_wrk "r$r tracing off" "http://127.0.0.1:$OFF/mcp/bench"
  run_wrk "r$r tracing on, sample_ratio 0" "http://127.0.0.1:$R0/mcp/bench"
  run_wrk "r$r tracing on, sample_ratio 1" "http://127.0.0.1:$R1/mcp/bench"
done
echo
echo "### Per request (callgrind, $N sequential keep-alive requests after 200 warm-up, all threads)"
echo
echo "| tailbridge                       | instructions | malloc calls |"
echo "|----------------------------------|-------------:|-------------:|"
kill "${PIDS_RUN[@]}" 2>/dev/null || true; sleep 1.5
[ -n "$BASE" ] && cg_row "without tracing (BASE_BIN)" "$BASE_BIN" base
cg_row "tracing off" "$BIN" off
cg_row "tracing on, sample_ratio 0" "$BIN" ratio0
cg_row "tracing on, sample_ratio 1" "$BIN" ratio1
} | tee "$W/result.md"
mkdir -p benches/results
cp "$W/result.md" benches/results/trace-latest.md
