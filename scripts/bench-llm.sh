#!/usr/bin/env bash
# Benchmarks Seer's LLM path against llama.cpp on the same model, prompt and
# thread count, and prints the two side by side.
#
# Usage: scripts/bench-llm.sh [--threads N] [--backend cpu|wgpu] [--no-seer] [--no-llamacpp] [MODEL]
#   --threads N     threads for both engines (default: nproc)
#   --backend B     Seer's backend, cpu or wgpu (default cpu); llama.cpp is CPU only
#   --no-seer       skip Seer (just the llama.cpp column)
#   --no-llamacpp   skip llama.cpp (and the venv)
#   MODEL           GGUF file (default: $SEER_TEST_MODELS or /var/cache/seer-ci/models,
#                   SmolLM2-135M-Instruct.Q4_1.gguf; scripts/fetch-test-models.sh fetches it)
#
# Both engines get scripts/bench-prompt.txt cut to 128 prompt tokens and generate
# 128 tokens greedily; each prints one JSON line with the same keys (see
# scripts/bench_llamacpp.py for what each number means). Seer runs as
#   seer-bench llm --model MODEL --backend B --threads N ...
# built by scripts/bench-build.sh (cargo profile `bench`, or $SEER_CARGO_PROFILE;
# CARGO_TARGET_DIR defaults to /var/cache/seer-ci/target). SEER_BENCH_PROFILE=1
# adds `--profile`: Seer's per-phase decode times. With --backend wgpu Seer
# runs twice, first with an empty kernel cache (a fresh XDG_CACHE_HOME: no
# autotune results, no Mesa shader cache) and then with the cache that run
# left; "first run" is prefill + 4 tokens straight after loading, i.e. the
# kernel compile and autotune cost of a first and of a second start. llama.cpp runs from the venv
# that scripts/llama-cpp-venv.sh makes (built on first use: 10-25 minutes).
# Exits non-zero if either engine failed; the table shows what did run.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

THREADS="$(nproc)"
BACKEND=cpu
RUN_SEER=1
RUN_LLAMA=1
MODEL=""
PROMPT_TOKENS=128
GEN_TOKENS=128
N_CTX=512

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) THREADS="$2"; shift 2 ;;
    --threads=*) THREADS="${1#*=}"; shift ;;
    --backend) BACKEND="$2"; shift 2 ;;
    --backend=*) BACKEND="${1#*=}"; shift ;;
    --no-seer) RUN_SEER=0; shift ;;
    --no-llamacpp) RUN_LLAMA=0; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "bench-llm: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) MODEL="$1"; shift ;;
  esac
done
case "$BACKEND" in cpu|wgpu) ;; *) echo "bench-llm: --backend must be cpu or wgpu" >&2; exit 2 ;; esac
MODEL="${MODEL:-${SEER_TEST_MODELS:-/var/cache/seer-ci/models}/SmolLM2-135M-Instruct.Q4_1.gguf}"
[[ -f "$MODEL" ]] || { echo "bench-llm: no model at $MODEL (run scripts/fetch-test-models.sh)" >&2; exit 2; }

# shellcheck source=scripts/bench-build.sh
source "$HERE/bench-build.sh"
PROMPT_FILE="$HERE/bench-prompt.txt"
WORKLOAD=(--prompt-file "$PROMPT_FILE" --prompt-tokens "$PROMPT_TOKENS" --gen-tokens "$GEN_TOKENS")

# The last line of stdout that parses as a JSON object, or nothing.
last_json() { grep -E '^\s*\{.*\}\s*$' | tail -n1 || true; }

status=0
SEER_JSON=""
SEER_COLD_JSON=""
LLAMA_JSON=""
PY=python3

if [[ $RUN_LLAMA -eq 1 ]]; then
  PY="$("$HERE/llama-cpp-venv.sh" | tail -n1)"
fi

if [[ $RUN_SEER -eq 1 ]]; then
  echo "bench-llm: seer/$BACKEND, $THREADS thread(s)" >&2
  EXTRA=()
  [[ -n "${SEER_BENCH_PROFILE:-}" ]] && EXTRA=(--profile)
  seer() {
    "$BENCH_BIN/seer-bench" llm --model "$MODEL" --backend "$BACKEND" \
      --threads "$THREADS" "${WORKLOAD[@]}" "${EXTRA[@]}"
  }
  if bench_build -p seer-models --bin seer-bench; then
    if [[ "$BACKEND" == wgpu ]]; then
      KCACHE="$(mktemp -d)"
      trap 'rm -rf "$KCACHE"' EXIT
      echo "bench-llm: wgpu with an empty kernel cache ($KCACHE)" >&2
      if out="$(XDG_CACHE_HOME="$KCACHE" seer)"; then
        SEER_COLD_JSON="$(last_json <<<"$out")"
      fi
      echo "bench-llm: wgpu again, with the kernel cache that run left" >&2
      if out="$(XDG_CACHE_HOME="$KCACHE" seer)"; then
        SEER_JSON="$(last_json <<<"$out")"
      fi
    elif out="$(seer)"; then
      SEER_JSON="$(last_json <<<"$out")"
    fi
  fi
  [[ -n "$SEER_JSON" ]] || { echo "bench-llm: seer-bench failed or printed no JSON line" >&2; status=1; }
fi

if [[ $RUN_LLAMA -eq 1 ]]; then
  echo "bench-llm: llama.cpp, $THREADS thread(s)" >&2
  if out="$("$PY" "$HERE/bench_llamacpp.py" --model "$MODEL" --threads "$THREADS" "${WORKLOAD[@]}" \
              --n-ctx "$N_CTX")"; then
    LLAMA_JSON="$(last_json <<<"$out")"
  fi
  [[ -n "$LLAMA_JSON" ]] || { echo "bench-llm: bench_llamacpp.py failed or printed no JSON line" >&2; status=1; }
fi

[[ -n "$SEER_JSON" ]] && echo "seer:      $SEER_JSON"
[[ -n "$LLAMA_JSON" ]] && echo "llama.cpp: $LLAMA_JSON"

[[ -n "$SEER_COLD_JSON" ]] && echo "seer, cold kernel cache: $SEER_COLD_JSON"

"$PY" - "$SEER_JSON" "$LLAMA_JSON" "$SEER_COLD_JSON" <<'PYEOF'
import json, sys

def load(s):
    try:
        return json.loads(s) if s.strip() else {}
    except ValueError:
        return {}

seer, llama, cold = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3])
rows = [
    ("load_ms", "load (ms)", "lower"),
    ("prompt_tokens", "prompt tokens", ""),
    ("prefill_tok_s", "prefill (tok/s)", "higher"),
    ("ttft_ms", "time to first token (ms)", "lower"),
    ("decode_tokens", "decode tokens", ""),
    ("decode_tok_s", "decode (tok/s)", "higher"),
    ("peak_rss_mb", "peak RSS (MB)", "lower"),
]

def fmt(v):
    if v is None:
        return "n/a"
    return f"{v:.2f}" if isinstance(v, float) else str(v)

head = ("metric", seer.get("engine", "seer"), llama.get("engine", "llama.cpp"), "seer/llama.cpp")
table = [head]
for key, label, better in rows:
    a, b = seer.get(key), llama.get(key)
    ratio = f"{a / b:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "n/a"
    if better and ratio != "n/a":
        ratio += f" ({better} is better)"
    table.append((label, fmt(a), fmt(b), ratio))
if cold:
    table.append(("first run, empty kernel cache (ms)", fmt(cold.get("first_run_ms")), "", ""))
    table.append(("first run, warm kernel cache (ms)", fmt(seer.get("first_run_ms")), "", ""))
    table.append(("adapter", str(seer.get("adapter", "?")), "", ""))
widths = [max(len(r[i]) for r in table) for i in range(4)]
threads = seer.get("threads", llama.get("threads", "?"))
print(f"\nthreads: {threads}")
for n, r in enumerate(table):
    print(" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if n == 0:
        print("-+-".join("-" * w for w in widths))
PYEOF

exit $status
