#!/usr/bin/env bash
# Benchmarks the network front ends (see scripts/bench_http.py), in one run:
# time to first answer token over the socket vs the OpenAI-compatible HTTP API
# of the same seerd, and through a seerd offloading to a llama.cpp server vs
# that server directly (same GGUF, same threads).
#
# Usage: scripts/bench-http.sh [--threads N] [--rounds N]
# Needs the test models (scripts/fetch-test-models.sh) and the pinned llama.cpp
# venv (scripts/llama-cpp-venv.sh; built on first use: 10-25 minutes).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
MODELS_DIR="${SEER_TEST_MODELS:-/var/cache/seer-ci/models}"
THREADS=1
ROUNDS=5
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) THREADS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench-http: unknown option $1" >&2; exit 2 ;;
  esac
done

PY="$("$HERE/llama-cpp-venv.sh" | tail -n1)"
# shellcheck source=scripts/bench-build.sh
source "$HERE/bench-build.sh"
cd "$ROOT"
bench_build -p seer-daemon --bin seerd
python3 "$HERE/bench_http.py" --seerd "$BENCH_BIN/seerd" --peers-python "$PY" \
  --llm "$MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" --threads "$THREADS" --rounds "$ROUNDS"
