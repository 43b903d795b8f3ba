#!/usr/bin/env bash
# Benchmarks Seer's vision path (SmolVLM: processor, SigLIP tower, connector,
# decoder) against llama.cpp's mtmd on the same GGUF pair, photo, question and
# thread count, and prints the JSON lines side by side.
#
# Usage: scripts/bench-vlm.sh [--threads N] [--backend cpu|wgpu] [--no-llamacpp] [--runs N] [DIR [IMAGE]]
#   DIR     a SmolVLM-256M-sized model as written by
#           `scripts/gen_vlm_real_dims.py [--q8_0] DIR` (NumPy + gguf-py, from
#           the venv-llamacpp) or `scripts/gen_tiny_smolvlm.py --real-dims DIR`
#           (needs torch); random weights, real dimensions; default
#           /var/cache/seer-ci/vlm-real
#   IMAGE   the photo (default tests/fixtures/images/coffee_landscape.jpg)
#
# Seer runs three ways: untiled (one 512x512 tile, Seer's default), tiled (the
# HF processor's grid + global tile, what llama.cpp always does) and, for the
# encoder alone, the same numbers per tile. llama.cpp runs from the venv that
# scripts/llama-cpp-venv.sh makes. Random weights: the answers are gibberish,
# the speed is real.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
THREADS="$(nproc)"
BACKEND=cpu
RUN_LLAMA=1
RUNS=3
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) THREADS="$2"; shift 2 ;;
    --backend) BACKEND="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --no-llamacpp) RUN_LLAMA=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "bench-vlm: unknown option $1" >&2; exit 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
DIR="${ARGS[0]:-/var/cache/seer-ci/vlm-real}"
IMAGE="${ARGS[1]:-$ROOT/tests/fixtures/images/coffee_landscape.jpg}"
for f in "$DIR/gguf/model.gguf" "$DIR/gguf/mmproj.gguf"; do
  [[ -f "$f" ]] || { echo "bench-vlm: no $f; write it with: /var/cache/seer-ci/venv-llamacpp/bin/python scripts/gen_vlm_real_dims.py $DIR" >&2; exit 2; }
done

# shellcheck source=scripts/bench-build.sh
source "$HERE/bench-build.sh"
bench_build -p seer-models --bin seer-bench
BENCH="$BENCH_BIN/seer-bench"
COMMON=(--model "$DIR/gguf/model.gguf" --mmproj "$DIR/gguf/mmproj.gguf" --image "$IMAGE" --threads "$THREADS" --runs "$RUNS")

echo "== seer ($BACKEND, untiled: one 512x512 tile)"
"$BENCH" vlm "${COMMON[@]}" --backend "$BACKEND"
echo "== seer ($BACKEND, tiled)"
"$BENCH" vlm "${COMMON[@]}" --backend "$BACKEND" --tiling
if [[ $RUN_LLAMA == 1 ]]; then
  VENV="${SEER_LLAMACPP_VENV:-/var/cache/seer-ci/venv-llamacpp}"
  [[ -x "$VENV/bin/python" ]] || "$HERE/llama-cpp-venv.sh"
  echo "== llama.cpp (CPU, always tiled)"
  "$VENV/bin/python" "$HERE/bench_vlm_llamacpp.py" "${COMMON[@]}" 2>/dev/null | grep -E '^\{' | tail -n1
fi
