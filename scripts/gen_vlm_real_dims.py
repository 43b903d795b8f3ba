#!/usr/bin/env python3
"""Write a SmolVLM-256M-sized GGUF pair with random weights, for benchmarks only.

scripts/bench-vlm.sh needs a model with SmolVLM-256M-Instruct's real dimensions
(SigLIP-B/16 at 512 px, 12 layers of width 768; a 30-layer SmolLM2-135M-shaped
decoder) to time the vision tower against llama.cpp's mtmd. The weights do not
matter for speed, so this script writes random ones with NumPy and gguf-py:
no torch, no transformers, no network. `gen_tiny_smolvlm.py --real-dims` writes
the same shapes through transformers and llama.cpp's converter, where torch is
installed.

The metadata and tokenizer are copied from the committed tiny fixture
(tests/fixtures/smolvlm-tiny/gguf), which llama.cpp's own converter wrote, with
the dimension keys set to the real model's. Matrices are f16; norms, biases and
the position table f32 (what `convert_hf_to_gguf.py --outtype f16` writes).

    /var/cache/seer-ci/venv-llamacpp/bin/python scripts/gen_vlm_real_dims.py [--q8_0] [DIR]

writes DIR/gguf/model.gguf (~0.3 GB) and DIR/gguf/mmproj.gguf (~0.2 GB);
DIR defaults to /var/cache/seer-ci/vlm-real (with --q8_0,
/var/cache/seer-ci/vlm-real-q8_0). --q8_0 stores the projection matrices as
Q8_0, like the catalogue's `smolvlm-256m-instruct` pair. Deterministic
(fixed seed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, quants

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests/fixtures/smolvlm-tiny/gguf"

# SmolVLM-256M-Instruct (HuggingFaceTB), config.json.
VISION = dict(width=768, ffn=3072, layers=12, heads=12, image=512, patch=16, scale=4,
              preproc=2048)
TEXT = dict(width=576, ffn=1536, layers=30, heads=9, kv_heads=3, vocab=49280)


def copy_field(w: GGUFWriter, r: GGUFReader, key: str) -> None:
    f = r.fields[key]
    t = f.types[0]
    if t == GGUFValueType.ARRAY:
        w.add_array(key, f.contents())
    else:
        w.add_key_value(key, f.contents(), t)


Q8_0 = False


def copy_metadata(w: GGUFWriter, r: GGUFReader, real: dict) -> None:
    """Every key of the tiny fixture's file, with `real`'s values where given."""
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key in real:
            w.add_key_value(key, real[key], field.types[0])
        else:
            copy_field(w, r, key)


def mat(rng, *shape) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)


def add_matrix(w: GGUFWriter, name: str, rng, *shape) -> None:
    """A projection matrix: f16, or Q8_0 blocks with --q8_0."""
    m = mat(rng, *shape)
    if Q8_0:
        q = quants.quantize(m.astype(np.float32), GGMLQuantizationType.Q8_0)
        w.add_tensor(name, q, raw_dtype=GGMLQuantizationType.Q8_0)
    else:
        w.add_tensor(name, m)


def vec(rng, n: int, around: float = 0.0) -> np.ndarray:
    return (around + rng.standard_normal(n, dtype=np.float32) * 0.02).astype(np.float32)


def write_mmproj(path: Path, rng) -> None:
    r = GGUFReader(TINY / "mmproj.gguf")
    w = GGUFWriter(path, "clip")
    v, t = VISION, TEXT
    real = {
        "clip.vision.projection_dim": t["width"],
        "clip.vision.image_size": v["image"],
        "clip.vision.patch_size": v["patch"],
        "clip.vision.embedding_length": v["width"],
        "clip.vision.feed_forward_length": v["ffn"],
        "clip.vision.block_count": v["layers"],
        "clip.vision.attention.head_count": v["heads"],
        "clip.vision.preproc_image_size": v["preproc"],
        "general.file_type": 7 if Q8_0 else 1,
    }
    copy_metadata(w, r, real)
    d, i, p = v["width"], v["ffn"], v["patch"]
    n = (v["image"] // p) ** 2
    add_matrix(w, "mm.model.fc.weight", rng, t["width"], d * v["scale"] ** 2)
    w.add_tensor("v.patch_embd.weight", mat(rng, d, 3, p, p))
    w.add_tensor("v.patch_embd.bias", vec(rng, d))
    # Added to f32 activations: llama.cpp's CPU add wants it f32.
    w.add_tensor("v.position_embd.weight", mat(rng, n, d).astype(np.float32))
    for l in range(v["layers"]):
        b = f"v.blk.{l}"
        for ln in ("ln1", "ln2"):
            w.add_tensor(f"{b}.{ln}.weight", vec(rng, d, 1.0))
            w.add_tensor(f"{b}.{ln}.bias", vec(rng, d))
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            add_matrix(w, f"{b}.{part}.weight", rng, d, d)
            w.add_tensor(f"{b}.{part}.bias", vec(rng, d))
        add_matrix(w, f"{b}.ffn_up.weight", rng, i, d)
        w.add_tensor(f"{b}.ffn_up.bias", vec(rng, i))
        add_matrix(w, f"{b}.ffn_down.weight", rng, d, i)
        w.add_tensor(f"{b}.ffn_down.bias", vec(rng, d))
    w.add_tensor("v.post_ln.weight", vec(rng, d, 1.0))
    w.add_tensor("v.post_ln.bias", vec(rng, d))
    finish(w)


def write_model(path: Path, rng) -> None:
    r = GGUFReader(TINY / "model.gguf")
    w = GGUFWriter(path, "llama")
    t = TEXT
    hd = t["width"] // t["heads"]
    real = {
        "llama.block_count": t["layers"],
        "llama.embedding_length": t["width"],
        "llama.feed_forward_length": t["ffn"],
        "llama.attention.head_count": t["heads"],
        "llama.attention.head_count_kv": t["kv_heads"],
        "llama.attention.key_length": hd,
        "llama.attention.value_length": hd,
        "llama.rope.dimension_count": hd,
        "llama.vocab_size": t["vocab"],
        "general.file_type": 7 if Q8_0 else 1,
    }
    copy_metadata(w, r, real)
    d, f, kv = t["width"], t["ffn"], t["kv_heads"] * hd
    add_matrix(w, "token_embd.weight", rng, t["vocab"], d)
    for l in range(t["layers"]):
        b = f"blk.{l}"
        w.add_tensor(f"{b}.attn_norm.weight", vec(rng, d, 1.0))
        add_matrix(w, f"{b}.attn_q.weight", rng, d, d)
        add_matrix(w, f"{b}.attn_k.weight", rng, kv, d)
        add_matrix(w, f"{b}.attn_v.weight", rng, kv, d)
        add_matrix(w, f"{b}.attn_output.weight", rng, d, d)
        w.add_tensor(f"{b}.ffn_norm.weight", vec(rng, d, 1.0))
        add_matrix(w, f"{b}.ffn_gate.weight", rng, f, d)
        add_matrix(w, f"{b}.ffn_up.weight", rng, f, d)
        add_matrix(w, f"{b}.ffn_down.weight", rng, d, f)
    w.add_tensor("output_norm.weight", vec(rng, d, 1.0))
    add_matrix(w, "output.weight", rng, t["vocab"], d)
    finish(w)


def finish(w: GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> int:
    global Q8_0
    args = sys.argv[1:]
    Q8_0 = "--q8_0" in args
    args = [a for a in args if a != "--q8_0"]
    default = "/var/cache/seer-ci/vlm-real-q8_0" if Q8_0 else "/var/cache/seer-ci/vlm-real"
    out = Path(args[0] if args else default) / "gguf"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(256)
    write_mmproj(out / "mmproj.gguf", rng)
    write_model(out / "model.gguf", rng)
    for name in ("mmproj.gguf", "model.gguf"):
        print(f"{out / name}: {(out / name).stat().st_size / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
