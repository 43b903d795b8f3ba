#!/usr/bin/env python3
"""llama.cpp's side of scripts/bench-vlm.sh: the same SmolVLM GGUF pair, photo
and question through libmtmd (llama-cpp-python's bindings), printed as one
JSON line with seer-bench vlm's keys.

- encoder_ms_per_tile: mtmd_encode_chunk time summed over the image chunks,
  divided by the tiles (llama.cpp always tiles SmolVLM: a 512x512 photo is
  resized to 2048 and cut into 4x4 tiles plus a global one).
- ttft_ms: from the photo's file to the first greedy token: decode, tokenize
  (preprocessing), encode every tile, decode the whole prompt, argmax.
- decode_tok_s: the following tokens, one llama_decode each.
Medians of --runs runs after --warmup untimed ones.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import resource
import statistics
import time

import numpy as np

import llama_cpp
from llama_cpp import mtmd_cpp


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--mmproj", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--question", default="What is in this image?")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gen-tokens", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()

    llm = llama_cpp.Llama(model_path=a.model, n_ctx=4096, n_batch=2048, n_ubatch=2048,
                          n_threads=a.threads, n_threads_batch=a.threads, verbose=False)
    params = mtmd_cpp.mtmd_context_params_default()
    params.use_gpu = False
    params.n_threads = a.threads
    params.print_timings = False
    params.warmup = False
    mctx = mtmd_cpp.mtmd_init_from_file(a.mmproj.encode(), llm.model, params)
    if not mctx:
        raise SystemExit("mtmd could not load the mmproj")
    marker = mtmd_cpp.mtmd_default_marker().decode()
    prompt = f"<|im_start|>User:{marker}{a.question}<end_of_utterance>\nAssistant:".encode()
    lctx = llm._ctx.ctx

    enc, ttft, dec = [], [], []
    tiles = n_prompt = 0
    for run in range(a.warmup + a.runs):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(lctx), True)
        t0 = time.perf_counter()
        # llama.cpp decodes the file itself (stb_image); inside the timing.
        bmp = mtmd_cpp.mtmd_helper_bitmap_init_from_file(mctx, a.image.encode(), False)
        if not bmp:
            raise SystemExit(f"llama.cpp cannot read {a.image}")
        text = mtmd_cpp.mtmd_input_text()
        text.text, text.text_len, text.add_special, text.parse_special = prompt, len(prompt), False, True
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        arr = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bmp)
        if mtmd_cpp.mtmd_tokenize(mctx, chunks, ctypes.byref(text), arr, 1) != 0:
            raise SystemExit("mtmd_tokenize failed")
        # Encode the image chunks on their own to time the encoder ...
        enc_s, n_img = 0.0, 0
        for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
            ch = mtmd_cpp.mtmd_input_chunks_get(chunks, i)
            if mtmd_cpp.mtmd_input_chunk_get_type(ch) != mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT:
                e0 = time.perf_counter()
                mtmd_cpp.mtmd_encode_chunk(mctx, ch)
                enc_s += time.perf_counter() - e0
                n_img += 1
        # ... then the real path: encode and decode every chunk, first token.
        new_n_past = llama_cpp.llama_pos(0)
        rc = mtmd_cpp.mtmd_helper_eval_chunks(mctx, lctx, chunks, 0, 0, 2048, True,
                                              ctypes.byref(new_n_past))
        if rc != 0:
            raise SystemExit(f"mtmd_helper_eval_chunks failed ({rc})")
        n_vocab = llm.n_vocab()
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(lctx, -1), shape=(n_vocab,))
        tok = int(np.argmax(logits))
        # The separate encoder pass above is not part of a real turn.
        first = time.perf_counter() - t0 - enc_s
        n_past = new_n_past.value
        d0 = time.perf_counter()
        for _ in range(a.gen_tokens - 1):
            batch = llama_cpp.llama_batch_get_one((llama_cpp.llama_token * 1)(tok), 1)
            if llama_cpp.llama_decode(lctx, batch) != 0:
                raise SystemExit("llama_decode failed")
            n_past += 1
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(lctx, -1), shape=(n_vocab,))
            tok = int(np.argmax(logits))
        dec_s = time.perf_counter() - d0
        n_prompt = mtmd_cpp.mtmd_helper_get_n_tokens(chunks)
        tiles = n_img
        mtmd_cpp.mtmd_input_chunks_free(chunks)
        mtmd_cpp.mtmd_bitmap_free(bmp)
        if run >= a.warmup:
            # One image chunk per tile for idefics3 (see docs/vision-fixtures.md).
            enc.append(enc_s * 1e3 / max(n_img, 1))
            ttft.append(first * 1e3)
            dec.append((a.gen_tokens - 1) / dec_s if dec_s > 0 else float("nan"))
    mtmd_cpp.mtmd_free(mctx)
    print(json.dumps({
        "engine": "llama.cpp (llama-cpp-python %s, mtmd)" % llama_cpp.__version__,
        "threads": a.threads,
        "image": a.image,
        "tiling": True,
        "tiles": tiles,
        "prompt_tokens": n_prompt,
        "encoder_ms_per_tile": statistics.median(enc),
        "ttft_ms": statistics.median(ttft),
        "decode_tok_s": statistics.median(dec),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
