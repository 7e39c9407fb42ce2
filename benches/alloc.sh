#!/usr/bin/env bash
# Global allocator comparison, in one run: tailbridge built with glibc's malloc (the
# default), jemalloc and mimalloc (`--features jemalloc|mimalloc`), each with production
# defaults (auth on with a cached token, access and audit logs on to a file), one worker.
# For each: instructions per request (callgrind), 1 KB POST throughput (wrk -c32), and
# resident memory idle, at the peak of a connection flood (4000 concurrent keep-alive
# connections, then new connections per request at full speed) and 5 s after it ended.
# Usage: bash benches/alloc.sh GLIBC_BIN JEMALLOC_BIN MIMALLOC_BIN [seconds=10]
#   e.g. cargo build --release && cp target/release/tailbridge /tmp/tb-glibc, and the same
#   with --features jemalloc / mimalloc.
# Needs: wrk nginx python3 valgrind bc. Results: benches/results/alloc-latest.md
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { sed -n 2,10p "$0"; exit 64; }
BINS=("$1" "$2" "$3"); NAMES=(glibc jemalloc mimalloc)
DUR=${4:-10}
N=${CALLGRIND_REQUESTS:-2000}
for t in wrk nginx python3 valgrind callgrind_control bc; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
ulimit -n 65536 2>/dev/null || true
BENCH_NAME=alloc
. benches/lib.sh
UP=$(port); IDP=$(port)
start_upstream "$UP"
python3 benches/idp_stub.py "$IDP" & PIDS+=($!)
write_post_script
write_auth_script
sed 's/^wrk.method = "POST"/wrk.method = "POST"\nwrk.headers["Connection"] = "close"/' "$W/post-auth.lua" > "$W/post-close.lua"
wait_port "$UP"; wait_port "$IDP"

config() { # NAME → $W/NAME.yaml on a fresh port; prints the port
  local p a; p=$(port); a=$(port)
  cat > "$W/$1.yaml" <<CONF
server: { listen: "127.0.0.1:$p", threads: 1, pid_file: "$W/$1.pid", upgrade_sock: "$W/$1.sock", grace_period: 1s, shutdown_timeout: 1s }
admin: { listen: "127.0.0.1:$a" }
tailnet: { mode: direct }
log: { level: info }
$(auth_yaml "$IDP")
endpoints:
  - { path: /mcp/bench, target: "http://127.0.0.1:$UP/mcp" }
CONF
  echo "$p"
}
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

{
echo "## Allocators run $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); production defaults, one worker"
echo
echo "| allocator | instructions / request | req/s (wrk -c32, ${DUR}s) | RSS idle (MiB) | RSS flood peak (MiB) | RSS 5 s after (MiB) |"
echo "|---|---:|---:|---:|---:|---:|"
for i in 0 1 2; do
  bin=${BINS[$i]}; name=${NAMES[$i]}
  p=$(config "$name-cg")
  ir=$(ir_per_request "$N" "$p" "$TOKEN" "$bin" --config "$W/$name-cg.yaml")
  p=$(config "$name")
  "$bin" --config "$W/$name.yaml" 2>"$W/$name.log" & pid=$!; PIDS+=($pid)
  wait_port "$p"
  url="http://127.0.0.1:$p/mcp/bench"
  wrk -t1 -c32 -d2s -s "$W/post-auth.lua" "$url" >/dev/null 2>&1 || true
  rps=$(wrk -t1 -c32 -d"${DUR}s" -s "$W/post-auth.lua" "$url" | awk '/Requests\/sec/ {print $2}')
  sleep 2; idle=$(rss "$pid"); peak=$idle
  # The flood: many concurrent keep-alive connections, then a new connection per request.
  ( wrk -t2 -c4000 -d"${DUR}s" -s "$W/post-auth.lua" "$url" >/dev/null 2>&1 || true
    wrk -t2 -c256 -d"${DUR}s" -s "$W/post-close.lua" "$url" >/dev/null 2>&1 || true ) & flood=$!
  while kill -0 "$flood" 2>/dev/null; do
    r=$(rss "$pid"); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.5
  done
  sleep 5; after=$(rss "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  printf "| %s | %d | %s | %.1f | %.1f | %.1f |\n" "$name" "$ir" "$rps" \
    "$(echo "$idle/1024" | bc -l)" "$(echo "$peak/1024" | bc -l)" "$(echo "$after/1024" | bc -l)"
done
} | tee "$W/result.md"
mkdir -p benches/results
cp "$W/result.md" benches/results/alloc-latest.md
