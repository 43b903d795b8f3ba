#!/usr/bin/env bash
# Runs the assistant on the default model: installs what is missing, fetches the
# model (cached), and streams the answer to a question.
#   scripts/run.sh "What is the capital of France?"
#   scripts/run.sh --backend wgpu --timings "How many legs does a spider have?"
set -euo pipefail
cd "$(dirname "$0")/.."
export SEER_CACHE="${SEER_CACHE:-/var/cache/seer-ci}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SEER_CACHE/target}"
MODELS="${SEER_TEST_MODELS:-$SEER_CACHE/models}"
scripts/install-deps.sh >&2
scripts/fetch-test-models.sh "$MODELS" >&2
export SEER_MODEL="${SEER_MODEL:-$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf}"
exec cargo run -q -p seer-models --example ask -- "$@"
