#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 600) each, one after the other, from the seeds
# in fuzz/seeds (the working corpus grows in fuzz/corpus, findings land in fuzz/artifacts).
# cargo-fuzz needs nightly features: on a stable toolchain RUSTC_BOOTSTRAP=1 allows them.
# Usage: bash fuzz/run.sh [seconds=600] [target ...]
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-600}; shift || true
TARGETS=${*:-config router bearer as_metadata jsonrpc sse}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in $TARGETS; do
  mkdir -p "corpus/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  echo "== $t (${SECS}s)"
  RUSTC_BOOTSTRAP=1 cargo fuzz run -s none "$t" "corpus/$t" -- -max_total_time="$SECS" -print_final_stats=1 2>&1 \
    | grep -E "^(stat::|#[0-9]+ +DONE|==[0-9]+== ERROR|SUMMARY|Done)" || true
done
