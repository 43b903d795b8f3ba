#!/usr/bin/env bash
# Creates (idempotently) the Python venv holding the llama.cpp reference engine
# that Seer's parity fixtures and benchmarks are measured against:
# llama-cpp-python built from its sdist on this machine (CPU only, no BLAS),
# plus transformers, tokenizers, gguf and numpy, its server extras
# (`python -m llama_cpp.server`) and the `openai` client, which the offload and
# HTTP API tests use as real peers; all pinned in scripts/requirements-llamacpp.txt.
#
# Usage: scripts/llama-cpp-venv.sh
#   SEER_LLAMA_VENV  venv directory (default /var/cache/seer-ci/venv-llamacpp)
#   PYTHON           interpreter that creates the venv (default python3)
#   CMAKE_ARGS       llama.cpp CMake flags (default -DGGML_NATIVE=ON -DGGML_BLAS=OFF)
#
# Prints the venv's python path as its last line. When every pinned package is
# already installed at its pinned version it does nothing else (no network).
# A first run compiles llama.cpp: 10-25 minutes on 2 cores. pip keeps the built
# wheel in its cache, so recreating the venv later is quick.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQS="$HERE/requirements-llamacpp.txt"
VENV="${SEER_LLAMA_VENV:-/var/cache/seer-ci/venv-llamacpp}"
PY="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "llama-cpp-venv: creating $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

# Lists the requirement lines whose package is missing or at another version.
missing() {
  "$VPY" - "$REQS" <<'PYEOF'
import re, sys
from importlib import metadata
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    try:
        have = metadata.version(name.strip())
    except metadata.PackageNotFoundError:
        have = None
    if have != want.strip():
        print(line)
PYEOF
}

todo="$(missing)"
if [[ -z "$todo" ]]; then
  echo "llama-cpp-venv: all pinned packages present in $VENV" >&2
  echo "$VPY"
  exit 0
fi
echo "llama-cpp-venv: installing:" $todo >&2

export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DGGML_BLAS=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
# Only what is missing, so a satisfied (already compiled) llama-cpp-python is
# never rebuilt; the full file is the constraint set, so dependencies pulled in
# by the missing ones get the pinned versions too.
# shellcheck disable=SC2086
"$VPY" -m pip install --no-binary llama-cpp-python -c "$REQS" $todo >&2

todo="$(missing)"
if [[ -n "$todo" ]]; then
  echo "llama-cpp-venv: still not at the pinned version:" $todo >&2
  exit 1
fi
echo "$VPY"
