#!/usr/bin/env bash
# runner against a real OpenAI-compatible server this project did not write: llama-cpp-python's
# server, serving the embedded model's GGUF with chatml-function-calling. Plays the shipped
# scenarios, `ask` (streamed and not, with tools and without) and a piped `chat`, and prints
# what each did. Builds the server into a scratch venv from PyPI (about 8 minutes on 2 cores
# the first time), so it stays out of CI.
#
#     bash scripts/compat-llamacpp.sh            # VENV=/tmp/runner-llamacpp PORT=8765
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-/tmp/runner-llamacpp}
PORT=${PORT:-8765}
VERSION=${LLAMACPP_VERSION:-0.3.36}
GGUF=${RUNNER_LOCAL_MODEL:-${RUNNER_CACHE_DIR:-$HOME/.cache/runner/models}/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ ! -f "$GGUF" ]; then
  echo "no GGUF at $GGUF: run runner once (or the tests) to fetch the embedded model" >&2
  exit 2
fi
if ! "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "llama-cpp-python[server]==$VERSION" || exit 2
fi
cargo build -q || exit 2
RUNNER=$PWD/target/debug/runner
"$VENV/bin/python" -m llama_cpp.server --model "$GGUF" --port "$PORT" --chat_format chatml-function-calling --n_ctx 2048 >/tmp/llamacpp-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break; sleep 0.5; done

WORK=$(mktemp -d)
cp -r scenarios "$WORK/"
cd "$WORK" || exit 2
export OPENAI_BASE_URL=http://127.0.0.1:$PORT/v1 OPENAI_API_KEY=EMPTY
MODEL=openai:smollm2-135m
step() { echo; echo "== $*"; }
step "runner run scenarios/ (tools in every scenario)"
time "$RUNNER" run scenarios/ -m "$MODEL" -j 1 --report run.csv; echo "exit $?"
step "runner ask, streamed, every tool offered"
time "$RUNNER" ask -m "$MODEL" "reverse the word banana"; echo "exit $?"
step "runner ask --no-stream"
"$RUNNER" ask -m "$MODEL" --no-stream "What is 2 plus 3?"; echo "exit $?"
step "runner ask --tools none"
"$RUNNER" ask -m "$MODEL" --tools none "Tell me a short joke"; echo "exit $?"
step "runner chat, piped"
printf 'reverse apple\nhello\nquit\n' | "$RUNNER" chat -m "$MODEL"; echo "exit $?"
step "requests that failed in the logs"
grep -ho '"error": "[^"]*"' logs/runs/*/*.json logs/conversations/*.json 2>/dev/null | sort | uniq -c | head -20
echo; echo "work dir: $WORK; server log: /tmp/llamacpp-server.log"
