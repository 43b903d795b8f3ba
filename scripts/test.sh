#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what is missing,
# fetches and checks the real test models, then runs every test.
#
# The cargo target dir and the model cache live outside the checkout
# (default /var/cache/seer-ci) so repeated runs are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

export SEER_CACHE="${SEER_CACHE:-/var/cache/seer-ci}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SEER_CACHE/target}"
export SEER_TEST_MODELS="${SEER_TEST_MODELS:-$SEER_CACHE/models}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$SEER_CACHE"

stamp() { echo "[$(date +%H:%M:%S)] $*"; }

stamp "installing system packages"
scripts/install-deps.sh
stamp "fetching test models into $SEER_TEST_MODELS"
scripts/fetch-test-models.sh "$SEER_TEST_MODELS"

stamp "installing the OpenAI-API peers (llama.cpp's server, the openai package)"
# A first run compiles llama.cpp (10-25 min on 2 cores); later runs find every
# pinned package and return at once.
SEER_PEERS_PYTHON="$(scripts/llama-cpp-venv.sh | tail -n1)"
export SEER_PEERS_PYTHON

stamp "checking formatting"
cargo fmt --all -- --check

stamp "building (target dir $CARGO_TARGET_DIR)"
cargo build --workspace --all-targets

stamp "running tests"
# One test binary at a time: the real-model tests are heavy and this machine
# class has 2 cores.
cargo test --workspace --all-targets -- --test-threads=1
stamp "done"
