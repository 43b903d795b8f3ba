#!/usr/bin/env python3
"""piper-tts + onnxruntime on the same sentences as `seer-bench tts`, for
scripts/bench-tts.sh. Prints one JSON line with the same keys.

The session is built here (not by PiperVoice.load) so the thread count is
the one asked for; phonemes come from piper-tts's own espeak-ng (speed is
what is compared, not phonemes). Scales are the voice's defaults, noise on,
as Seer speaks.
"""

import argparse
import json
import resource
import statistics
import time

import numpy as np
import onnxruntime as ort
from piper.phoneme_ids import phonemes_to_ids
from piper.phonemize_espeak import EspeakPhonemizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--voice", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    cfg = json.load(open(a.voice + ".json"))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    t0 = time.perf_counter()
    sess = ort.InferenceSession(a.voice, opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    inf = cfg.get("inference", {})
    scales = np.array(
        [inf.get("noise_scale", 0.667), inf.get("length_scale", 1.0), inf.get("noise_w", 0.8)],
        dtype=np.float32,
    )
    phonemizer = EspeakPhonemizer()
    rate = cfg["audio"]["sample_rate"]
    phon, first, rtf = [], [], []
    sentences, audio = 0, 0
    for i in range(a.warmup + a.runs):
        t0 = time.perf_counter()
        sents = phonemizer.phonemize(cfg["espeak"]["voice"], a.text)
        ids = [phonemes_to_ids(s, cfg["phoneme_id_map"]) for s in sents]
        p_ms = (time.perf_counter() - t0) * 1e3
        audio, f_ms = 0, float("nan")
        for n, s in enumerate(ids):
            out = sess.run(
                None,
                {
                    "input": np.array([s], dtype=np.int64),
                    "input_lengths": np.array([len(s)], dtype=np.int64),
                    "scales": scales,
                },
            )[0]
            audio += out.size
            if n == 0:
                f_ms = (time.perf_counter() - t0) * 1e3
        total = time.perf_counter() - t0
        sentences = len(ids)
        if i >= a.warmup:
            phon.append(p_ms)
            first.append(f_ms)
            rtf.append(total / (audio / rate))
    print(
        json.dumps(
            {
                "engine": f"onnxruntime {ort.__version__}",
                "threads": a.threads,
                "load_ms": load_ms,
                "sentences": sentences,
                "audio_s": audio / rate,
                "phonemize_ms": statistics.median(phon),
                "first_audio_ms": statistics.median(first),
                "rtf": statistics.median(rtf),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
