#!/usr/bin/env bash
# The test command: installs the end-to-end peers when missing, then runs every test:
#   1. the default build (direct and socks5 modes, auth, e2e with the MCP SDK and oidc-provider);
#   2. the tsnet backend (feature `tailscale`) through the real libtailscale-sys bindings,
#      linked to the libtailscale TEST DOUBLE in testing/tailscale-test-double through Cargo's
#      `links` override. The override is given only here, never in a config file, so no other
#      build can pick the double up.
# Usage: bash tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d tests/e2e/node_modules/@modelcontextprotocol/sdk ] || [ ! -d tests/e2e/node_modules/oidc-provider ] || [ ! -d tests/e2e/node_modules/mcp-remote ]; then
  npm ci --prefix tests/e2e --no-audit --no-fund
fi
cargo test --all-targets "$@"

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
cargo build -p tailscale-test-double
export TAILBRIDGE_TEST_DOUBLE_ARGS="--features tailscale --config target.$TRIPLE.tailscale.rustc-link-search=[\"$TARGET_DIR/debug\"] --config target.$TRIPLE.tailscale.rustc-link-lib=[\"static=tailscale_test_double\"]"
# shellcheck disable=SC2086
cargo test $TAILBRIDGE_TEST_DOUBLE_ARGS --test integration tsnet "$@"
