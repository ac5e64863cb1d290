#!/usr/bin/env bash
# Fuzzes scenario loading for a bounded time: bash scripts/fuzz.sh [SECONDS] [SEED]
# Exit 1 with the input under fuzz-crashes/ when the loader panics or takes over 2 s.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --quiet --example fuzz_scenarios -- "${1:-60}" ${2:+"$2"}
