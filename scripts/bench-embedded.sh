#!/usr/bin/env bash
# What a user waits for with the embedded model, end to end (process start to exit), on the
# release build with the downloaded weights cached: `runner ask` with and without a tool call
# and `runner run scenarios/`; median of N runs (default 3) of wall time and peak RSS, each
# cold (before every run, the converted Q8_0 weights and the kept prompt prefixes are
# removed: the first run after the download) and warm (both kept from the run before); and
# the engine's work amplification on the shipped scenarios (tokens run through the
# transformer / (prompt + generated tokens reported), from `runner -v`'s per-request events).
#
#   cargo build --release && bash scripts/bench-embedded.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3}
runner=$PWD/target/release/runner
[ -x "$runner" ] || { echo "build first: cargo build --release" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r scenarios "$work/"
cd "$work"
unset OPENAI_API_KEY RUNNER_MODEL

cache=${RUNNER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runner/models}
cold() { rm -rf "$cache/prefixes" "$cache"/*.q8_0-*.gguf; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

measure() { # label, command...
  local label=$1; shift
  : > times
  for _ in $(seq "$n"); do
    [ "$state" = cold ] && cold
    /usr/bin/time -f '%e %M' -o t "$@" > out 2> err || true
    cat t >> times
  done
  printf '%-40s %8s s %8s MiB   %s\n' "$label" "$(cut -d' ' -f1 times | median)" \
    "$(cut -d' ' -f2 times | median | awk '{printf "%.0f", $1/1024}')" "$(head -c 70 out | tr '\n' ' ')"
}

"$runner" ask --tools none "hi" > /dev/null 2>&1 || true   # weights fetched once
echo "embedded model, median of $n, $(nproc) cores"
for state in cold warm; do
  measure "$state: ask \"reverse the word banana\"" "$runner" ask "reverse the word banana"
  measure "$state: ask \"Tell me a short joke\"" "$runner" ask "Tell me a short joke"
  measure "$state: ask \"What is 2 plus 3?\"" "$runner" ask "What is 2 plus 3?"
  measure "$state: run scenarios/" "$runner" run scenarios/
done

RUST_LOG=runner=debug "$runner" run scenarios/ > /dev/null 2> debug || true
grep 'embedded model request' debug | sed 's/\x1b\[[0-9;]*m//g' | awk '
  { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] += kv[2] } }
  END { printf "work amplification on scenarios/: %d forwarded / (%d prompt + %d generated) = %.2f (%d requests; %d prompt tokens from the cache)\n",
        v["forwarded"], v["prompt"], v["generated"], v["forwarded"] / (v["prompt"] + v["generated"]), NR, v["cached"] }'
