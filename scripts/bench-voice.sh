#!/usr/bin/env bash
# Benchmarks hands-free listening end to end (see scripts/bench_voice.py):
# for each whisper model, end of speech → transcript and → first answer
# token, whisper's real-time factor, seerd's CPU while listening to silence
# and its peak RSS; beside them whisper.cpp's own path (scripts/whisper_ref.c,
# linked against the same whisper.cpp build) on the same WAV, same threads,
# with its full 30 s window and with the window Seer fits to the utterance.
#
# Usage: scripts/bench-voice.sh [--threads N] [--rounds N] [--idle-seconds S] [--vlm DIR] [MODEL...]
#   MODEL   whisper ggml files (default: ggml-tiny.en.bin and ggml-base.bin
#           from $SEER_TEST_MODELS or /var/cache/seer-ci/models)
#   --vlm DIR  also load SmolVLM from DIR/gguf/{model,mmproj}.gguf (the glasses
#           profile: whisper, Silero, SmolLM2, SmolVLM), look at a photo
#           through the camera after the spoken questions, and report seerd's
#           peak RSS after the look (write DIR with
#           scripts/gen_tiny_smolvlm.py --real-dims DIR --real-outtype f16)
# Needs what the test command installs (pulseaudio, espeak-ng, sox) and the
# test models (scripts/fetch-test-models.sh).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
MODELS_DIR="${SEER_TEST_MODELS:-/var/cache/seer-ci/models}"
THREADS=1
ROUNDS=3
IDLE=30
WHISPER=()
VLM=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) THREADS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --idle-seconds) IDLE="$2"; shift 2 ;;
    --vlm) VLM=(--vlm-model "$2/gguf/model.gguf" --vlm-mmproj "$2/gguf/mmproj.gguf"
                --image "$ROOT/tests/fixtures/images/coffee_landscape.jpg"); shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "bench-voice: unknown option $1" >&2; exit 2 ;;
    *) WHISPER+=("$1"); shift ;;
  esac
done
[[ ${#WHISPER[@]} -gt 0 ]] || WHISPER=("$MODELS_DIR/ggml-tiny.en.bin" "$MODELS_DIR/ggml-base.bin")

# shellcheck source=scripts/bench-build.sh
source "$HERE/bench-build.sh"
cd "$ROOT"
bench_build -p seer-daemon --bin seerd
PROFILE_DIR="$BENCH_BIN"

# whisper.cpp's headers and static libraries, as whisper-rs-sys built them.
OUT="$(ls -td "$PROFILE_DIR"/build/whisper-rs-sys-*/out 2>/dev/null | while read -r d; do
  [[ -f "$d/lib/libwhisper.a" ]] && { echo "$d"; break; }; done)"
[[ -n "$OUT" ]] || { echo "bench-voice: whisper-rs-sys has not been built" >&2; exit 1; }
REF="$CARGO_TARGET_DIR/whisper_ref"
cc -O2 -o "$REF" "$HERE/whisper_ref.c" -I"$OUT/include" -L"$OUT/lib" \
  -lwhisper -lggml -lggml-cpu -lggml-base -lstdc++ -lm -lpthread

for m in "${WHISPER[@]}"; do
  python3 "$HERE/bench_voice.py" --seerd "$PROFILE_DIR/seerd" --whisper-ref "$REF" \
    --model "$m" --vad "$MODELS_DIR/ggml-silero-v6.2.3.bin" \
    --llm "$MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" \
    --threads "$THREADS" --rounds "$ROUNDS" --idle-seconds "$IDLE" "${VLM[@]}"
done | tee /dev/stderr | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.startswith("{")]
cols = ["model", "idle_cpu_percent", "median_speech_to_transcript_ms", "median_speech_to_first_token_ms",
        "median_seer_transcribe_ms", "median_rtf", "whisper_cpp_fitted_ms", "whisper_cpp_full_window_ms", "peak_rss_mb"]
if any("peak_rss_after_look_mb" in r for r in rows):
    cols += ["look_ms", "image_encode_ms", "peak_rss_after_look_mb"]
print()
print(" | ".join(cols))
for r in rows:
    print(" | ".join(str(r.get(c, "")) for c in cols))
' 2>&1
