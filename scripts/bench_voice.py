#!/usr/bin/env python3
"""Hands-free voice benchmark, driven by scripts/bench-voice.sh.

Starts a private PulseAudio null sink and a real `seerd` listening for the
wake phrase through it, plays espeak-ng's "Hey Seer, what is the capital of
France?" into the sink several times, and measures from the end of the
speech to the `transcript.final` event and to the first answer token, as a
`voice` subscriber sees them. Before that it measures seerd's CPU use while
it listens to 30 s of silence. Then it runs whisper.cpp's own path
(scripts/whisper_ref.c) on the same WAV with the same model and threads.

Prints one JSON object per line and a table. Standard library only.
"""
import argparse, json, os, shutil, signal, socket, subprocess, sys, tempfile, time, wave, struct

QUESTION = "Hey Seer, what is the capital of France?"


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def speech_end_s(path):
    """Seconds from the start of the WAV to its last non-silent sample."""
    with wave.open(path) as w:
        n, rate = w.getnframes(), w.getframerate()
        pcm = struct.unpack(f"<{n}h", w.readframes(n))
    last = max((i for i, s in enumerate(pcm) if abs(s) > 328), default=0)
    return last / rate, n / rate


class Client:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("r")

    def send(self, obj):
        self.s.sendall((json.dumps(obj) + "\n").encode())

    def recv(self, timeout=120):
        self.s.settimeout(timeout)
        line = self.f.readline()
        if not line:
            raise RuntimeError("seerd closed the connection")
        return json.loads(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seerd", required=True)
    ap.add_argument("--whisper-ref", required=True)
    ap.add_argument("--model", required=True, help="whisper ggml file")
    ap.add_argument("--vad", required=True)
    ap.add_argument("--llm", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--vlm-model", help="SmolVLM GGUF: also look at --image through the camera "
                    "after the spoken questions (the glasses profile), and report the peak RSS")
    ap.add_argument("--vlm-mmproj")
    ap.add_argument("--image", help="the camera's picture (an image file as [vision] camera)")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="seer-bench-voice-")
    procs = []
    try:
        wav = os.path.join(tmp, "q.wav")
        raw = os.path.join(tmp, "raw.wav")
        run(["espeak-ng", "-s", "130", "-w", raw, QUESTION])
        run(["sox", raw, "-r", "16000", "-c", "1", "-b", "16", wav])
        end_s, dur_s = speech_end_s(wav)

        native = os.path.join(tmp, "native")
        with open(os.path.join(tmp, "default.pa"), "w") as f:
            f.write(f"load-module module-native-protocol-unix auth-anonymous=1 socket={native}\n"
                    "load-module module-null-sink sink_name=vsink\n"
                    "set-default-sink vsink\nset-default-source vsink.monitor\n")
        env = dict(os.environ, XDG_RUNTIME_DIR=tmp, HOME=tmp)
        procs.append(subprocess.Popen(
            ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
             "-F", os.path.join(tmp, "default.pa"), f"--log-target=file:{tmp}/pa.log"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        penv = dict(os.environ, PULSE_SERVER=f"unix:{native}")
        for _ in range(200):
            if subprocess.run(["pactl", "info"], env=penv, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)

        sock = os.path.join(tmp, "seer.sock")
        cfg = os.path.join(tmp, "config.toml")
        with open(cfg, "w") as f:
            f.write(f'[model]\npath = {json.dumps(a.llm)}\nbackend = "cpu"\nthreads = 1\n'
                    f'[socket]\npath = {json.dumps(sock)}\n[dbus]\nbus = "off"\n'
                    f'[listen]\nmode = "wake"\nmodel = {json.dumps(a.model)}\n'
                    f'vad = {json.dumps(a.vad)}\nthreads = {a.threads}\n')
            if a.vlm_model:
                f.write(f'[vision]\nmodel = {json.dumps(a.vlm_model)}\n'
                        f'mmproj = {json.dumps(a.vlm_mmproj)}\ncamera = {json.dumps(a.image)}\n')
        log = open(os.path.join(tmp, "seerd.log"), "w")
        seerd = subprocess.Popen([a.seerd, "--config", cfg], env=dict(penv, RUST_LOG="warn"),
                                 stdout=subprocess.DEVNULL, stderr=log)
        procs.append(seerd)
        for _ in range(600):
            if os.path.exists(sock):
                try:
                    c = Client(sock)
                    break
                except OSError:
                    pass
            time.sleep(0.1)
        else:
            sys.exit("seerd did not open its socket")
        c.send({"v": 1, "type": "subscribe", "events": ["voice"]})
        while True:
            ev = c.recv()
            if ev["type"] == "microphone" and ev.get("active"):
                break

        hz = os.sysconf("SC_CLK_TCK")
        t0, c0 = time.monotonic(), cpu_ticks(seerd.pid)
        time.sleep(a.idle_seconds)
        idle_cpu = (cpu_ticks(seerd.pid) - c0) / hz / (time.monotonic() - t0) * 100

        rounds = []
        for _ in range(a.rounds):
            run(["paplay", wav], env=penv)
            # paplay returns once the sink has played it all.
            speech_end = time.monotonic() - (dur_s - end_s)
            got = {}
            while "end" not in got:
                ev = c.recv()
                t = time.monotonic()
                kind = ev["type"]
                if kind == "transcript.final" and "transcript" not in got:
                    got["transcript"] = (t, ev)
                elif kind == "answer.delta" and "first" not in got:
                    got["first"] = t
                elif kind in ("answer.end", "error"):
                    got["end"] = (t, ev)
            tt, tev = got["transcript"]
            r = {
                "heard": tev.get("text"),
                "answer": got["end"][1].get("text"),
                "speech_to_transcript_ms": round((tt - speech_end) * 1000),
                "speech_to_first_token_ms": round((got.get("first", tt) - speech_end) * 1000),
                "transcribe_ms": tev["timings"]["transcribe_ms"],
                "utterance_ms": tev["timings"]["audio_ms"],
            }
            r["rtf"] = round(r["transcribe_ms"] / max(r["utterance_ms"], 1), 3)
            rounds.append(r)
            time.sleep(1.0)
        rss_kb = status_kb(seerd.pid, "VmHWM")
        look = None
        if a.vlm_model:
            t = time.monotonic()
            c.send({"v": 1, "type": "ask", "id": "look", "text": "What is in front of me?",
                    "image": {"camera": True}, "max_tokens": 16})
            while True:
                ev = c.recv(timeout=600)
                if ev.get("id") == "look" and ev["type"] in ("answer.end", "error"):
                    break
            if ev["type"] == "error":
                sys.exit(f"the look failed: {ev}")
            look = {"look_ms": round((time.monotonic() - t) * 1000),
                    "image_encode_ms": ev["timings"]["image_encode_ms"],
                    "peak_rss_after_look_mb": round(status_kb(seerd.pid, "VmHWM") / 1024, 1)}

        prompt = "Seer is a voice assistant. Hey Seer, stop. Cancel."
        fitted = min(1500, max(128, -(-int(dur_s * 1000) // 20) + 64))
        ref = {}
        for name, ctx in (("full_window", 0), ("fitted", fitted)):
            out = subprocess.run([a.whisper_ref, a.model, wav, str(a.threads), str(ctx), prompt],
                                 capture_output=True, text=True, check=True).stdout
            ref[name] = json.loads(out.strip().splitlines()[-1])

        med = lambda k: sorted(r[k] for r in rounds)[len(rounds) // 2]
        result = {
            "model": os.path.basename(a.model), "threads": a.threads,
            "idle_cpu_percent": round(idle_cpu, 2), "idle_seconds": a.idle_seconds,
            "peak_rss_mb": round(rss_kb / 1024, 1),
            "median_speech_to_transcript_ms": med("speech_to_transcript_ms"),
            "median_speech_to_first_token_ms": med("speech_to_first_token_ms"),
            "median_seer_transcribe_ms": med("transcribe_ms"), "median_rtf": med("rtf"),
            "whisper_cpp_fitted_ms": ref["fitted"]["transcribe_ms"],
            "whisper_cpp_full_window_ms": ref["full_window"]["transcribe_ms"],
            "rounds": rounds, "whisper_cpp": ref,
        }
        if look:
            result.update(look)
        print(json.dumps(result))
    except BaseException:
        log_path = os.path.join(tmp, "seerd.log")
        if os.path.exists(log_path):
            sys.stderr.write("seerd's log:\n" + open(log_path).read()[-4000:])
        raise
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
