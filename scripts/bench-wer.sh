#!/usr/bin/env bash
# Word error rate of whisper models on spoken questions (see
# scripts/bench_wer.py): a generated set of espeak-ng voices and speeds with
# pink noise at 20, 15 and 10 dB SNR (kept out of the tests' fixtures), each
# clip through `seer transcribe` (Silero VAD, fitted window, the hands-free
# decoder prompt). Prints WER overall and per noise level, repetition loops
# and the median transcription time per model, so the default model is
# chosen from figures; end of speech → first token per model is
# scripts/bench-voice.sh's.
#
# Usage: scripts/bench-wer.sh [--threads N] [--no-prompt] [MODEL...]
#   --no-prompt  transcribe without the hands-free path's decoder prompt
#   MODEL   whisper ggml files (default: ggml-tiny.en.bin and ggml-base.bin
#           from $SEER_TEST_MODELS or /var/cache/seer-ci/models)
# Needs espeak-ng and sox (installed by the test command).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
MODELS_DIR="${SEER_TEST_MODELS:-/var/cache/seer-ci/models}"
THREADS=1
PROMPT=()
WHISPER=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) THREADS="$2"; shift 2 ;;
    --no-prompt) PROMPT=(--prompt ""); shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "bench-wer: unknown option $1" >&2; exit 2 ;;
    *) WHISPER+=("$1"); shift ;;
  esac
done
[[ ${#WHISPER[@]} -gt 0 ]] || WHISPER=("$MODELS_DIR/ggml-tiny.en.bin" "$MODELS_DIR/ggml-base.bin")

# shellcheck source=scripts/bench-build.sh
source "$HERE/bench-build.sh"
cd "$ROOT"
bench_build -p seer-daemon --bin seer

python3 "$HERE/bench_wer.py" --seer "$BENCH_BIN/seer" --vad "$MODELS_DIR/ggml-silero-v6.2.3.bin" \
  --threads "$THREADS" "${PROMPT[@]}" "${WHISPER[@]}" | tee /dev/stderr | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.startswith("{")]
print()
print("model | clips | WER % | clean | 20 dB | 15 dB | 10 dB | repetition loops | median transcribe ms")
for r in rows:
    n = r["wer_percent_by_noise"]
    print(" | ".join(str(x) for x in [r["model"], r["clips"], r["wer_percent"], n.get("clean"), n.get("20 dB"),
                                       n.get("15 dB"), n.get("10 dB"), r["repetition_loops"], r["median_transcribe_ms"]]))
' 2>&1
