#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus (tests/fuzz/corpus/<target>/): a few
small, valid inputs per target, built here with the standard library only, so
the mutations in tests/tests/fuzz.rs and libFuzzer start from inputs that get
past each reader's first checks. Regression inputs (crashes found and fixed)
live beside them as `crash-*` files and are never rewritten.

Usage: python3 tests/fuzz/make_corpus.py
"""

import json
import os
import struct
import wave
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- GGUF v3 -------------------------------------------------------------
def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_kv(key, vtype, payload):
    return gguf_str(key) + struct.pack("<I", vtype) + payload


def gguf(tensors, meta, alignment=32):
    kvs = b"".join(meta)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + kvs
    infos, data = b"", b""
    for name, dims, ttype, raw in tensors:
        pad = (-len(data)) % alignment
        data += b"\0" * pad
        infos += gguf_str(name) + struct.pack("<I", len(dims))
        infos += b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", ttype, len(data))
        data += raw
    body = head + infos
    body += b"\0" * ((-len(body)) % alignment)
    return body + data


def llama_meta(n_embd=8, n_head=2, n_kv=1, ctx=64, vocab=4):
    u32 = lambda v: struct.pack("<I", v)
    f32 = lambda v: struct.pack("<f", v)
    return [
        gguf_kv("general.architecture", 8, gguf_str("llama")),
        gguf_kv("llama.block_count", 4, u32(1)),
        gguf_kv("llama.context_length", 4, u32(ctx)),
        gguf_kv("llama.embedding_length", 4, u32(n_embd)),
        gguf_kv("llama.feed_forward_length", 4, u32(16)),
        gguf_kv("llama.attention.head_count", 4, u32(n_head)),
        gguf_kv("llama.attention.head_count_kv", 4, u32(n_kv)),
        gguf_kv("llama.attention.layer_norm_rms_epsilon", 6, f32(1e-5)),
        gguf_kv("llama.rope.freq_base", 6, f32(10000.0)),
        gguf_kv(
            "tokenizer.ggml.tokens",
            9,
            struct.pack("<IQ", 8, vocab) + b"".join(gguf_str(f"t{i}") for i in range(vocab)),
        ),
        gguf_kv("general.alignment", 4, u32(32)),
    ]


def q8_0_block(vals):
    scale = max(abs(v) for v in vals) / 127 or 1.0
    h = struct.pack("<e", scale)
    return h + bytes((round(v / scale) & 0xFF) for v in vals)


def q4_0_block(vals):
    scale = max(abs(v) for v in vals) / 8 or 1.0
    qs = [min(15, max(0, round(v / scale) + 8)) for v in vals]
    return struct.pack("<e", scale) + bytes(qs[i] | (qs[i + 16] << 4) for i in range(16))


def corpus_gguf():
    f32 = struct.pack("<16f", *[i / 10 for i in range(16)])
    put("gguf", "f32-and-q8.gguf", gguf(
        [("token_embd.weight", [8, 2], 0, f32),
         ("blk.0.attn_q.weight", [32, 1], 8, q8_0_block([i / 31 - 0.5 for i in range(32)]))],
        llama_meta()))
    put("gguf", "q4_0-f16.gguf", gguf(
        [("output.weight", [32, 1], 2, q4_0_block([(i % 7) / 7 for i in range(32)])),
         ("output_norm.weight", [8], 1, struct.pack("<8e", *[1.0] * 8))],
        llama_meta()))
    put("gguf", "empty.gguf", gguf([], []))
    # Regression: 2^32 x 2^31 f32 elements fit in u64 but their byte size
    # (x4) does not; the reader once multiplied without a check and panicked.
    put("gguf", "crash-size-overflow.gguf", gguf(
        [("token_embd.weight", [1 << 32, 1 << 31], 0, b"")], llama_meta()))


# --- safetensors ---------------------------------------------------------
def safetensors(tensors):
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + data


def corpus_safetensors():
    put("safetensors", "three-dtypes.safetensors", safetensors([
        ("a", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
        ("b", "F16", [3], struct.pack("<3e", 0.5, -1, 2)),
        ("c", "BF16", [2], b"\x80\x3f\x00\x40"),
    ]))
    put("safetensors", "u8.safetensors", safetensors([("m", "U8", [4], b"\x01\x02\x03\x04")]))


# --- HF config.json ------------------------------------------------------
def corpus_hf_config():
    put("hf_config", "smollm2.json", json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
        "intermediate_size": 1536, "num_attention_heads": 9, "num_hidden_layers": 30,
        "num_key_value_heads": 3, "rms_norm_eps": 1e-5, "rope_theta": 100000, "vocab_size": 49152,
        "max_position_embeddings": 8192, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
    }, indent=1))
    put("hf_config", "llama3-rope.json", json.dumps({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_hidden_layers": 1, "num_key_value_heads": 2, "vocab_size": 16, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 32.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    }))
    put("hf_config", "smolvlm.json", json.dumps({
        "model_type": "idefics3", "scale_factor": 4, "image_token_id": 49190,
        "text_config": {"model_type": "llama", "hidden_size": 576, "num_attention_heads": 9,
                        "num_hidden_layers": 30, "num_key_value_heads": 3, "intermediate_size": 1536,
                        "vocab_size": 49280, "rms_norm_eps": 1e-5},
        "vision_config": {"hidden_size": 768, "image_size": 512, "patch_size": 16,
                          "num_attention_heads": 12, "num_hidden_layers": 12, "intermediate_size": 3072},
    }))


# --- socket protocol -----------------------------------------------------
def corpus_protocol():
    lines = [
        {"v": 1, "type": "ask", "id": "q1", "text": "What is the capital of France?", "max_tokens": 32,
         "conversation": "c", "stream": False, "speak": True},
        {"v": 1, "type": "ask", "id": "q2", "text": "What is this?", "image": {"base64": "iVBORw0KGgo="}},
        {"v": 1, "type": "ask", "id": "q3", "text": "look", "image": {"camera": True}},
        {"v": 1, "type": "ask", "id": "q4", "text": "x", "image": {"path": "/tmp/a.jpg"}},
        {"v": 1, "type": "cancel", "id": "q1"},
        {"v": 1, "type": "stop"},
        {"v": 1, "type": "subscribe", "events": ["state", "voice"]},
        {"v": 1, "type": "status", "id": "s"},
        {"v": 1, "type": "describe", "id": "d"},
        {"v": 1, "type": "set", "id": "m", "muted": True, "speech": False},
        {"v": 1, "type": "say", "id": "y", "text": "Hello."},
        {"v": 1, "type": "models.pull", "id": "p", "name": "smollm2-135m-instruct"},
        {"v": 1, "type": "models.list", "id": "l"},
        {"v": 1, "type": "listen.start", "id": "ptt"},
        {"v": 1, "type": "listen.stop", "id": "ptt"},
    ]
    for i, l in enumerate(lines):
        put("protocol", f"{i:02}-{l['type']}.json", json.dumps(l))


# --- seerd config --------------------------------------------------------
def corpus_config():
    put("config", "full.toml", """[model]
name = "smollm2-135m-instruct"
backend = "cpu"
threads = 2
context_length = 2048
load = "lazy"

[assistant]
max_tokens = 128
queue = 8

[socket]
path = "/run/seer/seer.sock"
max_line_bytes = 1048576

[listen]
mode = "wake"
wake_phrase = "hey seer"
start_threshold = 0.6
stop_threshold = 0.3

[vision]
enabled = true
camera = "v4l2:0"
max_pixels = 4000000

[speech]
voice = "/v/voice.onnx"
rate = 1.2

[offload]
mode = "prefer"
url = "http://192.168.1.20:8080/v1"
api_key = "k"
first_token_timeout_s = 5

[http]
enabled = true
listen = "0.0.0.0:8931"
api_key = "k"
allowed_origins = ["http://a.example"]

[dbus]
bus = "session"
""")
    put("config", "empty.toml", "")


# --- images --------------------------------------------------------------
def png(w, h, rgb=True):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ctype = 2 if rgb else 0
    bpp = 3 if rgb else 1
    raw = b"".join(b"\0" + bytes((x * 37 + y * 11) & 0xFF for x in range(w * bpp)) for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def bmp(w, h):
    row = bytes((x * 50) & 0xFF for x in range(w * 3))
    row += b"\0" * ((-len(row)) % 4)
    pixels = row * h
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def corpus_image():
    put("image", "rgb-4x3.png", png(4, 3))
    put("image", "gray-2x2.png", png(2, 2, rgb=False))
    put("image", "3x2.bmp", bmp(3, 2))
    # The smallest GIF: 1x1, one colour.
    put("image", "1x1.gif", bytes.fromhex(
        "47494638396101000100800000ffffff00000021f90401000000002c00000000010001000002024401003b"))
    jpg = os.path.join(HERE, "..", "fixtures", "images", "astronaut_portrait.jpg")
    if os.path.exists(jpg):
        with open(jpg, "rb") as f:
            put("image", "jpeg-head.jpg", f.read(2048))


# --- WAV -----------------------------------------------------------------
def wav(rate, channels, width, frames):
    import io
    b = io.BytesIO()
    with wave.open(b, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes((i * 7) & 0xFF for i in range(frames * channels * width)))
    return b.getvalue()


def corpus_wav():
    put("wav", "16k-mono-s16.wav", wav(16000, 1, 2, 400))
    put("wav", "44k-stereo-s16.wav", wav(44100, 2, 2, 300))
    put("wav", "8k-mono-u8.wav", wav(8000, 1, 1, 200))


# --- whisper.cpp ggml model ---------------------------------------------
def corpus_whisper():
    i32 = lambda *v: struct.pack(f"<{len(v)}i", *v)
    hp = i32(0x67676D6C, 51864, 4, 6, 1, 4, 4, 6, 1, 4, 80, 1)
    mel = i32(2, 3) + struct.pack("<6f", *[0.1] * 6)
    vocab = i32(2) + i32(1) + b"a" + i32(2) + b"bc"
    tensor = i32(2, 4, 0) + i32(2, 2) + b"w.wt" + struct.pack("<4f", 1, 2, 3, 4)
    put("whisper_model", "tiny-header.bin", hp + mel + vocab + tensor)
    put("whisper_model", "no-tensors.bin", hp + mel + vocab)


# --- Piper ONNX (protobuf written by hand) ------------------------------
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def onnx_model():
    weight = b"".join(struct.pack("<f", v) for v in [0.5, -0.5, 1.0, 2.0, 0.25, 0.0])
    tensor = (field(1, 0, 2) + field(1, 0, 1) + field(1, 0, 3) + field(2, 0, 1)
              + field(8, 2, b"onnx::Conv_1") + field(9, 2, weight))
    attr = field(1, 2, b"dilations") + field(8, 0, 1) + field(20, 0, 7)
    node = (field(1, 2, b"x") + field(1, 2, b"onnx::Conv_1") + field(2, 2, b"y")
            + field(3, 2, b"/dec/conv_pre/Conv") + field(4, 2, b"Conv") + field(5, 2, attr))
    graph = field(1, 2, node) + field(2, 2, b"g") + field(5, 2, tensor)
    return field(1, 0, 8) + field(7, 2, graph)


def corpus_piper():
    put("piper_onnx", "one-conv.onnx", onnx_model())
    cfg = {
        "audio": {"sample_rate": 22050},
        "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_id_map": {"_": [0], "^": [1], "$": [2], " ": [3], "a": [14], "ə": [59]},
        "num_symbols": 256,
        "num_speakers": 1,
        "speaker_id_map": {},
    }
    put("piper_config", "voice.onnx.json", json.dumps(cfg, ensure_ascii=False, indent=1))


# --- HTTP chat completions ----------------------------------------------
def corpus_http():
    bodies = [
        {"model": "seer", "messages": [{"role": "user", "content": "What is the capital of France?"}]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Why?"}],
         "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 5, "temperature": 0.7,
         "top_p": 0.9, "seed": 3, "stop": ["\n", "."]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}],
         "max_completion_tokens": 16},
        {"messages": [{"role": "user", "content": "Turn on the light"}], "max_tokens": 3,
         "tools": [{"type": "function", "function": {"name": "HassTurnOn", "parameters": {}}}],
         "tool_choice": "auto", "response_format": {"type": "text"}},
    ]
    for i, b in enumerate(bodies):
        put("http_chat", f"{i:02}.json", json.dumps(b))


def main():
    corpus_gguf()
    corpus_safetensors()
    corpus_hf_config()
    corpus_protocol()
    corpus_config()
    corpus_image()
    corpus_wav()
    corpus_whisper()
    corpus_piper()
    corpus_http()
    n = sum(len(fs) for _, _, fs in os.walk(OUT))
    print(f"make_corpus: {n} files in {OUT}")


if __name__ == "__main__":
    main()
