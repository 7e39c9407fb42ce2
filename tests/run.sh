#!/usr/bin/env bash
# The test command: installs the end-to-end peers when missing, then runs every test.
# Usage: bash tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d tests/e2e/node_modules/@modelcontextprotocol/sdk ]; then
  npm ci --prefix tests/e2e --no-audit --no-fund
fi
cargo test --all-targets "$@"
