#!/usr/bin/env bash
# Bounded soak: DURATION seconds (default 300) of mixed traffic and faults against one
# tailbridge with production defaults (auth on against a stub IdP, a tool policy in force,
# access and audit logs on, to a file), printing its RSS and open descriptors every 10 s.
# The traffic: cached tokens, new tokens, bad tokens from many source addresses in
# 127.0.0.0/8, abandoned SSE streams, oversized bodies, half-sent requests, denied tool calls
# (benches/soak.py). Usage: bash benches/soak.sh [seconds=300]
# Needs: nginx python3 and a release build. Results: benches/results/soak-latest.md
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-300}
BIN=target/release/tailbridge
[ -x "$BIN" ] || cargo build --release
ulimit -n 65536 2>/dev/null || true
BENCH_NAME=soak
. benches/lib.sh
UP=$(port); SSE=$(port); IDP=$(port); TB=$(port); TBA=$(port)
start_upstream "$UP"
python3 benches/sse_upstream.py "$SSE" & PIDS+=($!)
python3 benches/idp_stub.py "$IDP" & PIDS+=($!)
cat > "$W/tb.yaml" <<CONF
server: { listen: "127.0.0.1:$TB", threads: 1, pid_file: "$W/tb.pid", upgrade_sock: "$W/tb.sock" }
admin: { listen: "127.0.0.1:$TBA" }
tailnet: { mode: direct }
log: { access_log: true, level: info }
$(auth_yaml "$IDP")
limits: { max_request_body: 1MiB }
endpoints:
  - { path: /mcp/bench, target: "http://127.0.0.1:$UP/mcp", tools: { deny: ["delete_*"] } }
  - { path: /mcp/sse, target: "http://127.0.0.1:$SSE/sse" }
CONF
"$BIN" --config "$W/tb.yaml" 2>"$W/tb.log" & TB_PID=$!; PIDS+=($TB_PID)
for p in $UP $SSE $IDP $TB; do wait_port "$p"; done
{
echo "## Soak run $(date -u +%Y-%m-%dT%H:%MZ), ${DUR}s"
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); tailbridge $($BIN --version | cut -d' ' -f2)"
echo
python3 benches/soak.py "$TB" "$TB_PID" "$DUR"
echo
echo "Log lines written: $(wc -l < "$W/tb.log")"
} | tee "$W/result.md"
mkdir -p benches/results
cp "$W/result.md" benches/results/soak-latest.md
