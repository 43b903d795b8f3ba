#!/usr/bin/env python3
"""Word error rate of whisper models on spoken questions, driven by
scripts/bench-wer.sh.

Generates its own set (never the tests' fixtures): espeak-ng speaks a list
of questions in several voices and speeds, and sox mixes pink noise in at
several signal-to-noise ratios. Each clip goes through `seer transcribe`
(Silero VAD, the window fitted to the speech, the hands-free decoder
prompt) with each model, and the transcript is scored against the text.
Also counts transcripts that repeat themselves (whisper's greedy loop) and
reports the median transcription time, so the default model is chosen from
figures: accuracy against time.

Prints one JSON object per model and a table. Standard library only.
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile

QUESTIONS = [
    "What is the capital of Germany?",
    "How tall is the Eiffel Tower?",
    "Set a timer for ten minutes.",
    "What time is it in Tokyo?",
    "Who wrote the book Moby Dick?",
    "How many days are in a leap year?",
    "What is the weather like tomorrow?",
    "Translate good morning into Spanish.",
    "What am I looking at right now?",
    "Remind me to call my sister at six.",
]
# espeak-ng voice, words per minute.
VOICES = [("en-us", 150), ("en-gb", 175), ("en-us+f3", 130), ("en-gb-scotland", 160)]
# None: clean; else pink noise at this SNR, dB.
NOISE = [None, 20, 15, 10]
PROMPT = "Seer is a voice assistant. Hey Seer, stop. Cancel."


def words(s):
    return re.sub(r"[^a-z0-9' ]", " ", s.lower().replace("-", " ")).split()


def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def repeats(text):
    """Whether a run of three or more words occurs twice in a row."""
    w = words(text)
    for n in range(3, len(w) // 2 + 1):
        for i in range(len(w) - 2 * n + 1):
            if w[i:i + n] == w[i + n:i + 2 * n]:
                return True
    return False


def make_set(tmp):
    clips = []
    for qi, q in enumerate(QUESTIONS):
        for vi, (voice, wpm) in enumerate(VOICES):
            raw = os.path.join(tmp, f"q{qi}v{vi}.raw.wav")
            clean = os.path.join(tmp, f"q{qi}v{vi}.wav")
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", raw, q], check=True)
            # Half a second of silence either side, 16 kHz mono.
            subprocess.run(["sox", raw, "-r", "16000", "-c", "1", "-b", "16", clean,
                            "pad", "0.5", "0.5"], check=True)
            for snr in NOISE:
                if snr is None:
                    clips.append((q, voice, wpm, snr, clean))
                    continue
                noisy = os.path.join(tmp, f"q{qi}v{vi}n{snr}.wav")
                # Speech RMS, then pink noise scaled to it minus the SNR.
                stat = subprocess.run(["sox", clean, "-n", "stat"], capture_output=True,
                                      text=True).stderr
                rms = float(re.search(r"RMS\s+amplitude:\s+([0-9.]+)", stat).group(1))
                dur = float(re.search(r"Length \(seconds\):\s+([0-9.]+)", stat).group(1))
                noise = os.path.join(tmp, "noise.wav")
                subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", noise,
                                "synth", str(dur), "pinknoise", "vol", "0.5"], check=True)
                nstat = subprocess.run(["sox", noise, "-n", "stat"], capture_output=True,
                                       text=True).stderr
                nrms = float(re.search(r"RMS\s+amplitude:\s+([0-9.]+)", nstat).group(1))
                gain = rms / nrms / (10 ** (snr / 20))
                subprocess.run(["sox", "-m", clean, "-v", f"{gain:.6f}", noise, noisy],
                               check=True)
                clips.append((q, voice, wpm, snr, noisy))
    return clips


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seer", required=True)
    ap.add_argument("--vad", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", default=PROMPT,
                    help="decoder prompt (default: the hands-free path's; '' for none)")
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="seer-bench-wer-")
    try:
        clips = make_set(tmp)
        print(f"bench-wer: {len(clips)} clips ({len(QUESTIONS)} questions x {len(VOICES)} voices "
              f"x {len(NOISE)} noise levels)", file=sys.stderr)
        for m in a.models:
            errors = total = loops = 0
            by_snr, times, worst = {}, [], []
            for q, voice, wpm, snr, path in clips:
                cmd = [a.seer, "transcribe", "--json", "--model", m, "--vad", a.vad,
                       "--threads", str(a.threads), path]
                if a.prompt:
                    cmd += ["--prompt", a.prompt]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"seer transcribe failed on {path}: {out.stderr.strip()}")
                parts = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
                text = " ".join(p["text"] for p in parts)
                times.append(sum(p.get("elapsed_ms", 0) for p in parts))
                e = edit_distance(words(q), words(text))
                errors, total = errors + e, total + len(words(q))
                s = by_snr.setdefault("clean" if snr is None else f"{snr} dB", [0, 0])
                s[0], s[1] = s[0] + e, s[1] + len(words(q))
                loops += repeats(text)
                if e:
                    worst.append({"said": q, "heard": text, "voice": voice, "wpm": wpm,
                                  "snr_db": snr, "errors": e})
            worst.sort(key=lambda w: -w["errors"])
            print(json.dumps({
                "model": os.path.basename(m), "prompt": a.prompt, "clips": len(clips),
                "wer_percent": round(100 * errors / total, 1),
                "wer_percent_by_noise": {k: round(100 * v[0] / v[1], 1) for k, v in by_snr.items()},
                "repetition_loops": loops,
                "median_transcribe_ms": statistics.median(times),
                "worst": worst[:5],
            }))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
