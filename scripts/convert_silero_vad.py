#!/usr/bin/env python3
"""Converts Silero VAD's TorchScript weights (silero_vad.jit, from the PyPI
package silero-vad) to whisper.cpp's VAD ggml format. numpy only: the .jit
archive is a zip whose data.pkl is unpickled here without torch.

Usage: convert_silero_vad.py silero_vad.jit OUT.bin [--version 6.2.3]

Why the .jit: the package's silero_vad_16k.safetensors holds different,
older weights. The 16 kHz model (`_model.*`) is written; the 8 kHz one is
not. Layout, as whisper.cpp's loader reads it: magic; model type string
"silero-16k"; version (3 int32); window 512, context 64; 4 encoder layers as
(in, out, kernel); LSTM input and hidden size; final conv in/out; then the
tensors (encoder conv weights f16 and biases f32, the LSTM f32, the final
1x1 conv weight f16 and bias f32, the STFT basis f16) with ggml's reversed
dimensions.
"""

import argparse
import os
import pickle
import struct
import sys
import zipfile

import numpy as np

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "BoolStorage": np.bool_,
}


class _Module:
    """Stands in for every TorchScript class: keeps its attributes."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)


class _Storage:
    def __init__(self, name):
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *_):
    size = tuple(size)
    if not size:
        return np.array(storage[offset])
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride]
    )
    return np.array(view)


def load_jit(path):
    """Every tensor of a TorchScript archive, by attribute path."""
    z = zipfile.ZipFile(path)
    pkl = [n for n in z.namelist() if n.endswith("/data.pkl")]
    if len(pkl) != 1:
        sys.exit(f"{path}: not a TorchScript archive (no single data.pkl)")
    root = pkl[0].rsplit("/", 1)[0]

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
                return _rebuild_tensor
            if module == "torch" and name.endswith("Storage"):
                return _Storage(name)
            if module == "collections" and name == "OrderedDict":
                import collections

                return collections.OrderedDict
            if module.startswith("__torch__") or module.startswith("torch"):
                return type(name, (_Module,), {})
            sys.exit(f"{path}: unexpected pickled class {module}.{name}")

        def persistent_load(self, pid):
            _, storage, key, _, _ = pid
            if storage.name not in STORAGE_DTYPES:
                sys.exit(f"{path}: unsupported storage {storage.name}")
            return np.frombuffer(z.read(f"{root}/data/{key}"), STORAGE_DTYPES[storage.name])

    obj = Unpickler(z.open(pkl[0])).load()
    out = {}

    def walk(o, prefix, depth):
        if isinstance(o, np.ndarray):
            out[prefix] = o
        elif depth < 16 and isinstance(o, _Module):
            for k, v in o.__dict__.items():
                walk(v, f"{prefix}.{k}" if prefix else k, depth + 1)
        elif depth < 16 and isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, f"{prefix}.{i}", depth + 1)

    walk(obj, "", 0)
    return out


ENCODER = [(129, 128), (128, 64), (64, 64), (64, 128)]
KERNEL = 3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("jit")
    ap.add_argument("out")
    ap.add_argument("--version", default="6.2.3", help="silero-vad version written in the header")
    args = ap.parse_args()
    t = load_jit(args.jit)

    names = []
    for i, (cin, cout) in enumerate(ENCODER):
        w = t.get(f"_model.encoder.{i}.reparam_conv.weight")
        if w is None or w.shape != (cout, cin, KERNEL):
            sys.exit(f"{args.jit}: encoder layer {i} is not {cout}x{cin}x{KERNEL}")
        names += [f"_model.encoder.{i}.reparam_conv.weight", f"_model.encoder.{i}.reparam_conv.bias"]
    names += [f"_model.decoder.rnn.{k}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    names += ["_model.decoder.decoder.2.weight", "_model.decoder.decoder.2.bias"]
    names += ["_model.stft.forward_basis_buffer"]
    missing = [n for n in names if n not in t]
    if missing:
        sys.exit(f"{args.jit}: missing tensors {missing}")

    major, minor, patch = (int(x) for x in args.version.split("."))
    tmp = args.out + ".partial"
    with open(tmp, "wb") as f:
        i32 = lambda *v: f.write(struct.pack("<" + "i" * len(v), *v))  # noqa: E731
        i32(0x67676D6C)
        kind = b"silero-16k"
        i32(len(kind))
        f.write(kind)
        i32(major, minor, patch)
        i32(512, 64)  # window, context (samples)
        i32(len(ENCODER))
        for cin, cout in ENCODER:
            i32(cin, cout, KERNEL)
        i32(128, 128)  # LSTM input, hidden
        i32(128, 1)  # final conv in, out
        for name in names:
            a = t[name]
            if name == "_model.stft.forward_basis_buffer":
                # Kept 3-D ([258, 1, 256]); whisper.cpp uses it as a conv kernel.
                f16 = True
            else:
                a = np.squeeze(a)
                f16 = name.endswith(".weight") and ("encoder" in name or "decoder.decoder.2" in name)
            a = a.astype("<f2" if f16 else "<f4")
            raw = name.encode("utf-8")
            i32(a.ndim, len(raw), 1 if f16 else 0)
            i32(*reversed(a.shape))
            f.write(raw)
            f.write(np.ascontiguousarray(a).tobytes())
    os.replace(tmp, args.out)
    print(f"convert_silero_vad: {args.out}: {os.path.getsize(args.out)} bytes, v{args.version}")


if __name__ == "__main__":
    main()
