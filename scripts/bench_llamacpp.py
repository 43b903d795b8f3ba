#!/usr/bin/env python3
"""Benchmarks llama.cpp (through llama-cpp-python) the way `seer-bench llm` measures Seer.

Run it with the reference venv (scripts/llama-cpp-venv.sh makes it):

    "$(scripts/llama-cpp-venv.sh | tail -n1)" scripts/bench_llamacpp.py \\
        --model /var/cache/seer-ci/models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --threads 2 --prompt-file scripts/bench-prompt.txt \\
        --prompt-tokens 128 --gen-tokens 128 --n-ctx 512

scripts/bench-llm.sh runs it next to Seer and prints both side by side.

What is measured, in one process, with no warm-up run:

* load_ms: constructing the model and context (weights are mmapped).
* prefill: the prompt file's text is tokenised (llama.cpp defaults: BOS only if
  the model asks for it) and cut to exactly --prompt-tokens ids, which are
  evaluated in one call; prefill_tok_s = prompt_tokens / that time.
* ttft_ms: prefill plus picking the first token (argmax of the last logits).
* decode: --gen-tokens further steps, each evaluating the previous token alone
  and taking the argmax; EOS does not stop it. decode_tok_s = decode_tokens /
  the time of those steps. The first token (from the prefill) is not counted.
* peak_rss_mb: the process's ru_maxrss (interpreter and numpy included).

Prints one JSON line on stdout:
{"engine":"llama.cpp","threads":N,"load_ms":..,"prompt_tokens":..,"prefill_tok_s":..,
 "ttft_ms":..,"decode_tokens":..,"decode_tok_s":..,"peak_rss_mb":..}
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt-file", type=Path, required=True)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--n-ctx", type=int, default=512)
    args = ap.parse_args()

    if args.prompt_tokens < 1 or args.gen_tokens < 0:
        ap.error("--prompt-tokens must be >= 1 and --gen-tokens >= 0")
    if args.prompt_tokens + args.gen_tokens + 1 > args.n_ctx:
        ap.error("--n-ctx must hold prompt-tokens + gen-tokens + 1")

    import llama_cpp

    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=str(args.model),
        n_ctx=args.n_ctx,
        n_batch=max(512, args.prompt_tokens),
        n_threads=args.threads,
        n_threads_batch=args.threads,
        logits_all=False,
        verbose=False,
    )
    load_ms = (time.perf_counter() - t0) * 1e3

    text = args.prompt_file.read_text(encoding="utf-8")
    ids = list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))
    if len(ids) < args.prompt_tokens:
        print(
            f"bench_llamacpp: {args.prompt_file} has {len(ids)} tokens, fewer than {args.prompt_tokens}",
            file=sys.stderr,
        )
        return 2
    ids = ids[: args.prompt_tokens]

    n_vocab = llm.n_vocab()

    def next_token() -> int:
        # With logits_all=False llama-cpp-python does not copy logits into
        # Llama.scores; read the last row straight from the context.
        row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(row, shape=(n_vocab,))))

    t1 = time.perf_counter()
    llm.eval(ids)
    t2 = time.perf_counter()
    tok = next_token()
    t3 = time.perf_counter()

    for _ in range(args.gen_tokens):
        llm.eval([tok])
        tok = next_token()
    t4 = time.perf_counter()

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    decode_s = t4 - t3
    result = {
        "engine": "llama.cpp",
        "threads": args.threads,
        "load_ms": round(load_ms, 2),
        "prompt_tokens": len(ids),
        "prefill_tok_s": round(len(ids) / (t2 - t1), 2),
        "ttft_ms": round((t3 - t1) * 1e3, 2),
        "decode_tokens": args.gen_tokens,
        "decode_tok_s": round(args.gen_tokens / decode_s, 2) if args.gen_tokens else None,
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
