#!/usr/bin/env bash
# The test command. It first installs what the tests need when it is missing, then runs
# every test:
#   0. peers: apt packages (cmake for pingora's build, microsocks, pebble, openssl, HAProxy, Chromium
#      for the status page, iproute2 for network-namespace test hosts), the npm modules in
#      tests/e2e (MCP TypeScript SDK, mcp-remote, oidc-provider, playwright-core), and a Python venv
#      in tests/py/.venv with the MCP Python SDK (mcp==2.3.0), kubernetes-validate and opentelemetry-proto. It never skips a test for a
#      missing peer: where it cannot install, it stops and names the command that would;
#   1. the default build (direct and socks5 modes, auth, MCP layer, e2e with the SDKs and
#      oidc-provider);
#   2. the tsnet backend (feature `tailscale`) through the real libtailscale-sys bindings,
#      linked to the libtailscale TEST DOUBLE in testing/tailscale-test-double through Cargo's
#      `links` override. The override is given only here, never in a config file, so no other
#      build can pick the double up.
# Usage: bash tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="cmake microsocks pebble openssl chromium iproute2 haproxy"
missing=""
for cmd in cmake microsocks pebble openssl chromium ip haproxy; do
  command -v "$cmd" >/dev/null || missing="$missing $cmd"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; else
    echo "tests/run.sh: missing$missing; install with: sudo apt-get install -y $APT_PACKAGES" >&2
    exit 1
  fi
  echo "== installing$missing (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_PACKAGES >/dev/null
fi
for cmd in node npm python3; do
  command -v "$cmd" >/dev/null || { echo "tests/run.sh: $cmd is missing; install Node.js 20+ and Python 3.10+ first" >&2; exit 1; }
done
if [ ! -d tests/e2e/node_modules/@modelcontextprotocol/sdk ] || [ ! -d tests/e2e/node_modules/oidc-provider ] || [ ! -d tests/e2e/node_modules/mcp-remote ] || [ ! -d tests/e2e/node_modules/playwright-core ] || [ ! -d tests/e2e/node_modules/undici ]; then
  echo "== npm modules (tests/e2e)"
  npm ci --prefix tests/e2e --no-audit --no-fund
fi
VENV=tests/py/.venv
if ! "$VENV/bin/python" -c 'import mcp.server.mcpserver, mcp.client.client, kubernetes_validate, opentelemetry.proto.collector.trace.v1.trace_service_pb2' 2>/dev/null; then
  echo "== Python venv with the MCP SDK, kubernetes-validate and opentelemetry-proto ($VENV)"
  python3 -m venv "$VENV" || { echo "tests/run.sh: cannot create a venv; install it with: sudo apt-get install -y python3-venv" >&2; exit 1; }
  "$VENV/bin/pip" install -q mcp==2.3.0 kubernetes-validate opentelemetry-proto
fi

cargo test --all-targets "$@"

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
cargo build -p tailscale-test-double
# rustc bundles a static native library into the rlib of the crate that links it, so a
# libtailscale-sys built against an older double would keep it: rebuild that small crate.
cargo clean -p libtailscale-sys --quiet
export TAILBRIDGE_TEST_DOUBLE_ARGS="--features tailscale --config target.$TRIPLE.tailscale.rustc-link-search=[\"$TARGET_DIR/debug\"] --config target.$TRIPLE.tailscale.rustc-link-lib=[\"static=tailscale_test_double\"]"
# shellcheck disable=SC2086
cargo test $TAILBRIDGE_TEST_DOUBLE_ARGS --test integration tsnet "$@"
