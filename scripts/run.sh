#!/usr/bin/env bash
# Runs the assistant: installs what is missing, fetches the default model
# (cached), builds, and starts `seerd` in the foreground on the default socket
# ($XDG_RUNTIME_DIR/seer/seer.sock, or /run/seer/seer.sock). Ask it from
# another terminal:
#   cargo run -q -p seer-daemon --bin seer -- ask "What is the capital of France?"
# Arguments are passed to seerd (e.g. --config FILE, --print-config).
set -euo pipefail
cd "$(dirname "$0")/.."
export SEER_CACHE="${SEER_CACHE:-/var/cache/seer-ci}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SEER_CACHE/target}"
export SEER_TEST_MODELS="${SEER_TEST_MODELS:-$SEER_CACHE/models}"
scripts/install-deps.sh >&2
scripts/fetch-test-models.sh "$SEER_TEST_MODELS" >&2
cargo build -q -p seer-daemon --bins
exec "$CARGO_TARGET_DIR/debug/seerd" "$@"
