#!/usr/bin/env bash
# Sends the shipped scenarios' traces to a real Arize Phoenix and asks Phoenix what it stored:
# how many spans of each kind, and how it read them (its own span kinds and attributes). Needs
# `pip install arize-phoenix` (PHOENIX=path/to/phoenix, default `phoenix` on PATH) and a
# release build; the embedded model plays, so no key is needed.
#
#     bash scripts/traces-phoenix.sh
set -euo pipefail
cd "$(dirname "$0")/.."
phoenix=${PHOENIX:-phoenix}
port=${PHOENIX_PORT:-6006}
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
PHOENIX_WORKING_DIR="$work/phoenix" PHOENIX_PORT="$port" "$phoenix" serve >"$work/phoenix.log" 2>&1 &
server=$!
for _ in $(seq 120); do
  curl -sf "http://localhost:$port/v1/projects" >/dev/null && break
  sleep 1
done
env -u OPENAI_API_KEY cargo run --release --quiet -- run scenarios/ -m local:smollm2-135m \
  --otlp "http://localhost:$port" --otlp-content --logs-dir "$work/logs" --report "$work/r.csv"
curl -sf "http://localhost:$port/v1/projects/default/spans?limit=1000" | python3 -c '
import collections, json, sys
spans = json.load(sys.stdin)["data"]
print(f"Phoenix stored {len(spans)} spans")
for (name, kind), n in sorted(collections.Counter((s["name"].split()[0], s["span_kind"]) for s in spans).items()):
    print(f"  {n:3} {name} (Phoenix kind {kind})")
chat = next(s for s in spans if s["name"].startswith("chat"))
read = sorted(k for k in chat["attributes"] if k.startswith(("llm.", "session.")))
print("  a chat span as Phoenix reads it:", ", ".join(read[:8]), "...")
roots = [s for s in spans if s["name"].startswith("invoke_agent")]
events = sum(len(s["events"]) for s in roots)
print(f"  {events} check events on {len(roots)} runs")
'
