#!/usr/bin/env bash
# Benchmarks Seer's Piper voice (seer-bench tts, burn CPU backend) beside
# piper-tts + onnxruntime (scripts/bench_tts_onnx.py) on the same sentences,
# at 1 and 2 threads, in one run: real-time factor (synthesis time / audio
# time, lower is faster), time to the first sentence's audio (phonemes +
# synthesis of sentence 1: what the speech stage adds after the first
# sentence of an answer is complete), load time, peak RSS.
#
# Usage: scripts/bench-tts.sh [--voice FILE.onnx] [--runs N] [--text TEXT]
#   default voice: the test voice, $SEER_TEST_MODELS/piper/en_US-joe-medium.onnx
# onnxruntime runs from /var/cache/seer-ci/venv-piper-fixtures (made here from
# models/tests/fixtures/requirements-piper.txt if missing; PyPI only).
# Seer is built by scripts/bench-build.sh (cargo profile `bench` unless
# SEER_CARGO_PROFILE says otherwise).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
MODELS_DIR="${SEER_TEST_MODELS:-/var/cache/seer-ci/models}"
VOICE="$MODELS_DIR/piper/en_US-joe-medium.onnx"
RUNS=3
TEXT="The capital of France is Paris. It is known for the Eiffel Tower, its museums and its cafés. Would you like to know more?"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --voice) VOICE="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --text) TEXT="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench-tts: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -f "$VOICE" ]] || { echo "bench-tts: $VOICE is missing (scripts/fetch-test-models.sh)" >&2; exit 1; }

VENV=/var/cache/seer-ci/venv-piper-fixtures
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import onnxruntime, piper' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$ROOT/models/tests/fixtures/requirements-piper.txt"
fi

# shellcheck source=scripts/bench-build.sh
source "$HERE/bench-build.sh"
bench_build -p seer-models --bin seer-bench

for t in 1 2; do
  "$BENCH_BIN/seer-bench" tts --voice "$VOICE" --text "$TEXT" --threads "$t" --runs "$RUNS"
  "$VENV/bin/python" "$HERE/bench_tts_onnx.py" --voice "$VOICE" --text "$TEXT" --threads "$t" --runs "$RUNS"
done | tee /dev/stderr | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.startswith("{")]
cols = ["engine", "threads", "sentences", "audio_s", "rtf", "first_audio_ms", "phonemize_ms", "load_ms", "peak_rss_mb"]
print()
print("| " + " | ".join(cols) + " |")
print("|" + "---|" * len(cols))
for r in rows:
    print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) and c == "rtf" else f"{r[c]:.0f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
'
