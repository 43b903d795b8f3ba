#!/usr/bin/env python3
"""Cross-check the tiny SmolVLM GGUF pair with llama.cpp itself (llama-cpp-python 0.3.36).

Called by scripts/gen_tiny_smolvlm.py when the reference-engine venv exists; can be run
alone (from the repository root):

    /var/cache/seer-ci/venv-llamacpp/bin/python scripts/check_tiny_smolvlm_llamacpp.py

Checks, against tests/fixtures/smolvlm-tiny/reference.{json,safetensors}:
  1. llama.cpp's GGUF tokenizer gives transformers' input_ids for every prompt (text-only
     prompt and the image-expanded prompts, parse_special on) and tokenizer.json's ids for the
     tokenizer probes (including the two where transformers 5 differs);
  2. text-only prompt: llama.cpp's last-position logits are close to transformers' (llama.cpp
     rounds activations to bf16 for bf16 weights, so only ~1e-2) and its greedy tokens agree
     while the reference top-2 margin is clearly larger than that error;
  3. images: llama.cpp's mtmd (mmproj.gguf, its own idefics3 preprocessing = a Pillow LANCZOS
     port and the same tiling rule) on the decoded photo pixels gives one embedding block per
     tile; each must match the transformers connector output of the tiled case to 5e-3 (ggml's
     GELU and its resize port are not bit-exact; different tiles differ by O(1)), in the same
     order (row-major tiles, global last);
  4. prints the chunk layout llama.cpp builds for a tiled image (text tokens between tiles).
Exit status 0 when all checks pass.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

import llama_cpp
from llama_cpp import mtmd_cpp

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", type=Path, default=REPO / "tests/fixtures/smolvlm-tiny")
    ap.add_argument("--images", type=Path, default=REPO / "tests/fixtures/images")
    args = ap.parse_args()
    ref = json.loads((args.fixtures / "reference.json").read_text())
    ten = load_file(str(args.fixtures / "reference.safetensors"))
    failures = []

    def check(cond, msg):
        print(("  ok   " if cond else "  FAIL ") + msg)
        if not cond:
            failures.append(msg)

    llm = llama_cpp.Llama(model_path=str(args.fixtures / "gguf/model.gguf"), n_ctx=512, n_batch=512,
                          n_threads=1, logits_all=True, verbose=False)

    # 1. tokenizer
    for name, c in ref["cases"].items():
        text = c.get("expanded_text", c["prompt_text"])
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        check(ids == c["input_ids"], f"llama.cpp tokenizer == transformers ids ({name}, {len(ids)} tokens)")

    for probe in ref["generator"].get("tokenizer_probes", []):
        ids = llm.tokenize(probe["text"].encode("utf-8"), add_bos=False, special=True)
        check(ids == probe["ids"], f"llama.cpp tokenizer == tokenizer.json on {probe['text']!r}")

    # 2. text-only logits and greedy
    c = ref["cases"]["text"]
    llm.reset()
    llm.eval(c["input_ids"])
    last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
    want = ten["text.logits_last"].astype(np.float64)
    d = float(np.abs(last - want).max())
    rel = d / float(np.abs(want).max())
    check(rel < 0.02, f"text logits: llama.cpp vs transformers max |diff| {d:.3g} = {rel:.2%} of max |logit| "
                      f"(ggml rounds activations to bf16 before bf16 matmuls)")
    greedy = []
    for step in range(len(c["greedy_ids"])):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        greedy.append(tok)
        llm.eval([tok])
    agree = 0
    for a, b in zip(greedy, c["greedy_ids"]):
        if a != b:
            break
        agree += 1
    margins = c["greedy_top2_margins"]
    check(agree == len(greedy) or margins[agree] < 2 * d,
          f"text greedy: llama.cpp agrees for {agree}/{len(greedy)} tokens"
          + ("" if agree == len(greedy) else f" (diverges where the reference margin is {margins[agree]:.3g})"))

    # 3. mmproj through mtmd
    params = mtmd_cpp.mtmd_context_params_default()
    params.use_gpu = False
    params.n_threads = 1
    params.print_timings = False
    params.warmup = False
    mctx = mtmd_cpp.mtmd_init_from_file(str(args.fixtures / "gguf/mmproj.gguf").encode(), llm.model, params)
    check(bool(mctx), "mtmd loaded mmproj.gguf (projector idefics3)")
    if not mctx:
        return 1
    marker = mtmd_cpp.mtmd_default_marker().decode()
    for cname, c in ref["cases"].items():
        if not cname.endswith(".tiled"):
            continue
        rgb = np.ascontiguousarray(ten[f"image.{c['photo']}.rgb"])
        h, w, _ = rgb.shape
        buf = (ctypes.c_uint8 * rgb.size).from_buffer_copy(rgb.tobytes())
        bmp = mtmd_cpp.mtmd_bitmap_init(w, h, buf)
        text = mtmd_cpp.mtmd_input_text()
        tb = f"<|im_start|>User:{marker}What?".encode()
        text.text, text.text_len, text.add_special, text.parse_special = tb, len(tb), False, True
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        arr = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bmp)
        rc = mtmd_cpp.mtmd_tokenize(mctx, chunks, ctypes.byref(text), arr, 1)
        check(rc == 0, f"{cname}: mtmd_tokenize")
        layout, blocks = [], []
        n_embd = llm.n_embd()
        for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
            ch = mtmd_cpp.mtmd_input_chunks_get(chunks, i)
            t = mtmd_cpp.mtmd_input_chunk_get_type(ch)
            if t == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                p = mtmd_cpp.mtmd_input_chunk_get_tokens_text(ch, ctypes.byref(n))
                toks = [p[j] for j in range(n.value)]
                layout.append(llm.detokenize(toks, special=True).decode("utf-8", "replace"))
            else:
                nt = mtmd_cpp.mtmd_input_chunk_get_n_tokens(ch)
                rc = mtmd_cpp.mtmd_encode_chunk(mctx, ch)
                e = mtmd_cpp.mtmd_get_output_embd(mctx)
                emb = np.ctypeslib.as_array(e, shape=(nt * n_embd,)).reshape(nt, n_embd).copy()
                blocks.append(emb)
                layout.append(f"[image chunk: {nt} tokens]")
        mtmd_cpp.mtmd_input_chunks_free(chunks)
        mtmd_cpp.mtmd_bitmap_free(bmp)
        hf = ten[f"{cname}.connector"]            # (tiles, seq, hidden): row-major tiles, then global
        seq = hf.shape[1]
        flat = np.concatenate(blocks) if blocks else np.zeros((0, n_embd))
        check(flat.shape[0] == hf.shape[0] * seq,
              f"{cname}: llama.cpp produced {flat.shape[0]} image embeddings = {hf.shape[0]} tiles x {seq}")
        order, worst = [], 0.0
        for k in range(flat.shape[0] // seq):
            blk = flat[k * seq:(k + 1) * seq]
            dists = [float(np.abs(blk - hf[j]).max()) for j in range(hf.shape[0])]
            j = int(np.argmin(dists))
            order.append("global" if j == hf.shape[0] - 1 else f"tile{j}")
            worst = max(worst, dists[j])
        want_order = [f"tile{j}" for j in range(hf.shape[0] - 1)] + ["global"]
        check(worst < 5e-3 and order == want_order,
              f"{cname}: every llama.cpp tile embedding matches a transformers tile (max |diff| {worst:.2e}); "
              f"llama.cpp order {order}")
        print(f"  {cname}: llama.cpp chunk layout: {json.dumps(layout)}")
    mtmd_cpp.mtmd_free(mctx)
    if failures:
        print(f"{len(failures)} llama.cpp check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
