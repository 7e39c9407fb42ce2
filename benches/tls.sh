#!/usr/bin/env bash
# TLS comparison, in one run: tailbridge, Caddy and nginx (from apt) terminating TLS with the
# SAME certificate and key (ECDSA P-256) in front of the same upstream, each on one worker.
#   1. full handshakes per second: `openssl s_time -new` (a new session every time, no request);
#   2. reconnect + request: wrk with `Connection: close` (one TLS connection per request; wrk
#      offers its previous session, so servers that support resumption resume);
#   3. TLS request throughput: wrk keep-alive, 1 KB JSON POST, -t1 -c32.
# Usage: bash benches/tls.sh [duration_seconds=10]
# Needs: wrk nginx caddy openssl python3 (apt-get install -y wrk nginx-light caddy openssl)
# and a release build. Results: benches/results/tls-latest.md
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
BIN=target/release/tailbridge
for t in wrk nginx caddy openssl python3; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
[ -x "$BIN" ] || cargo build --release
ulimit -n 65536 2>/dev/null || true

BENCH_NAME=tls-bench . benches/lib.sh
UP=$(port); TB=$(port); TBA=$(port); NG=$(port); CA=$(port)
mkdir -p "$W/ng"

# One certificate for everyone.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null

start_upstream "$UP"

cat > "$W/tb.yaml" <<CONF
server: { listen: "127.0.0.1:$TB", threads: 1, pid_file: "$W/tb.pid", upgrade_sock: "$W/tb.sock" }
admin: { listen: "127.0.0.1:$TBA" }
tailnet: { mode: direct }
tls: { mode: files, cert_file: "$W/cert.pem", key_file: "$W/key.pem" }
log: { access_log: false, level: error }
endpoints:
  - { path: /mcp/bench, target: "http://127.0.0.1:$UP/mcp" }
CONF
"$BIN" --config "$W/tb.yaml" 2>"$W/tb.log" & PIDS+=($!)

cat > "$W/ng/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $W/ng/pid; error_log stderr crit;
events { worker_connections 8192; }
http { access_log off; client_body_temp_path $W/ng; proxy_temp_path $W/ng;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NG ssl http2; keepalive_requests 1000000;
    ssl_certificate $W/cert.pem; ssl_certificate_key $W/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location /mcp/bench { proxy_pass http://up/mcp; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; } } }
CONF
nginx -p "$W/ng" -c "$W/ng/nginx.conf" & PIDS+=($!)

cat > "$W/Caddyfile" <<CONF
{
	admin off
	auto_https off
	log default {
		output discard
	}
}
https://127.0.0.1:$CA {
	tls $W/cert.pem $W/key.pem
	reverse_proxy /mcp/bench* 127.0.0.1:$UP {
		flush_interval -1
	}
}
CONF
GOMAXPROCS=1 HOME=$W XDG_DATA_HOME=$W XDG_CONFIG_HOME=$W caddy run --config "$W/Caddyfile" --adapter caddyfile >"$W/caddy.log" 2>&1 & PIDS+=($!)

for p in $UP $TB $NG $CA; do wait_port $p; done

write_post_script
sed 's/^wrk.method = "POST"/wrk.method = "POST"\nwrk.headers["Connection"] = "close"/' "$W/post.lua" > "$W/post-close.lua"

# Every target must answer over TLS with the shared certificate before anything is timed.
for p in $TB $NG $CA; do
  code=$(python3 - "$p" "$W/cert.pem" <<'PY'
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
req = urllib.request.Request(f"https://127.0.0.1:{sys.argv[1]}/mcp/bench", data=b"{}", method="POST")
print(urllib.request.urlopen(req, context=ctx).status)
PY
)
  [ "$code" = 200 ] || { echo "port $p did not answer 200 over TLS" >&2; exit 1; }
done

s_time() { # port → full handshakes per second (wall clock)
  openssl s_time -connect "127.0.0.1:$1" -new -time "$DUR" 2>/dev/null \
    | awk '/connections in .* real seconds/ {printf "%.0f", $1/$4}'
}

wrk_row() { # script url → "req/s p50 p99 errors"
  wrk -t1 -c32 -d2s -s "$1" "$2" >/dev/null 2>&1 || true   # warm-up
  local out; out=$(wrk -t1 -c32 -d"${DUR}s" --latency -s "$1" "$2")
  local rps p50 p99 err
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  err=$(echo "$out" | awk '/Socket errors|Non-2xx/ {n++} END {print n+0}')
  echo "$rps $p50 $p99 $err"
}

{
echo "## TLS run $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "Machine: $(nproc) cores, $(uname -r); $(openssl version | cut -d' ' -f1-2), nginx $(nginx -v 2>&1 | cut -d/ -f2), caddy $(caddy version | cut -d' ' -f1), tailbridge $($BIN --version | cut -d' ' -f2). One ECDSA P-256 certificate for all three; each proxy on one worker; ${DUR}s per figure."
echo
echo "| proxy      | full handshakes/s (s_time -new) | reconnect+request/s (wrk, Connection: close) | keep-alive req/s | keep-alive p50 | keep-alive p99 | wrk errors lines |"
echo "|------------|-------------------------------:|---------------------------------------------:|-----------------:|---------------:|---------------:|----:|"
for row in "tailbridge $TB" "caddy $CA" "nginx $NG"; do
  set -- $row
  hs=$(s_time "$2")
  read -r close_rps _ _ close_err < <(wrk_row "$W/post-close.lua" "https://127.0.0.1:$2/mcp/bench")
  read -r ka_rps ka_p50 ka_p99 ka_err < <(wrk_row "$W/post.lua" "https://127.0.0.1:$2/mcp/bench")
  printf "| %-10s | %30s | %44s | %16s | %14s | %14s | %3s |\n" "$1" "$hs" "$close_rps" "$ka_rps" "$ka_p50" "$ka_p99" "$((close_err + ka_err))"
done
} | tee "$W/result.md"
mkdir -p benches/results
cp "$W/result.md" benches/results/tls-latest.md
