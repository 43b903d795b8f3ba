"""Time to first answer token through Seer's front ends, in one run:

- the same question over the Unix socket and over the OpenAI-compatible HTTP
  API (streamed) of one seerd with the local model: what HTTP adds;
- the same question through a seerd offloading to a llama.cpp server
  (`[offload] mode = "only"`) and sent to that server directly: what offload
  adds.

Standard library only (run by scripts/bench-http.sh); the llama.cpp server runs
from the pinned venv. Prints one JSON line per figure and a table.
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time

QUESTION = "What is the capital of France?"
SYSTEM = "You are Seer, a helpful voice assistant on smart glasses. Answer in one short sentence."


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(port, path, key, limit=90):
    t0 = time.time()
    while time.time() - t0 < limit:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path, headers={"Authorization": f"Bearer {key}"})
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"nothing answered on port {port}{path}")


def start_seerd(seerd, tmp, name, model, threads, extra):
    sock = os.path.join(tmp, f"{name}.sock")
    cfg = os.path.join(tmp, f"{name}.toml")
    with open(cfg, "w") as f:
        f.write(
            f'[model]\npath = "{model}"\nbackend = "cpu"\nthreads = {threads}\n'
            f'[socket]\npath = "{sock}"\n[listen]\nmode = "off"\n[vision]\nenabled = false\n'
            f'[speech]\nenabled = false\n[dbus]\nbus = "off"\n{extra}'
        )
    env = dict(os.environ, RUST_LOG="warn")
    env.pop("SEER_SOCKET", None)
    p = subprocess.Popen([seerd, "--config", cfg], env=env)
    t0 = time.time()
    while time.time() - t0 < 120:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            s.close()
            return p, sock
        except OSError:
            time.sleep(0.1)
    raise SystemExit("seerd did not open its socket")


def socket_ttft(sock, n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    f = s.makefile("rb")
    req = {"v": 1, "type": "ask", "id": f"b{n}", "text": QUESTION, "max_tokens": 32}
    t0 = time.perf_counter()
    s.sendall((json.dumps(req) + "\n").encode())
    first, backend = None, None
    for line in f:
        ev = json.loads(line)
        if ev.get("type") == "answer.delta" and first is None:
            first = (time.perf_counter() - t0) * 1e3
        if ev.get("type") in ("answer.end", "error", "cancelled"):
            if ev["type"] != "answer.end":
                raise SystemExit(f"socket turn failed: {ev}")
            backend = ev.get("backend")
            break
    s.close()
    return first, backend


def sse_ttft(port, path, key, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    c.request(
        "POST",
        path,
        body=json.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    r = c.getresponse()
    if r.status != 200:
        raise SystemExit(f"{path}: HTTP {r.status}: {r.read()[:300]}")
    first = None
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        ch = json.loads(data)
        for choice in ch.get("choices", []):
            if (choice.get("delta") or {}).get("content") and first is None:
                first = (time.perf_counter() - t0) * 1e3
    c.close()
    return first


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seerd", required=True)
    ap.add_argument("--llm", required=True)
    ap.add_argument("--peers-python", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    key = "bench-key"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # 1. Socket vs HTTP on one daemon, local model.
        hport = free_port()
        p, sock = start_seerd(
            a.seerd, tmp, "local", a.llm, a.threads,
            f'[http]\nenabled = true\nlisten = "127.0.0.1:{hport}"\napi_key = "{key}"\n',
        )
        try:
            wait_http(hport, "/health", key)
            body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 32, "stream": True}
            socket_ttft(sock, -1)  # warm-up (first-turn allocations)
            sse_ttft(hport, "/v1/chat/completions", key, body)
            sk, ht = [], []
            for i in range(a.rounds):
                sk.append(socket_ttft(sock, i)[0])
                ht.append(sse_ttft(hport, "/v1/chat/completions", key, body))
            rows.append({"figure": "local model, first token", "socket_ms": statistics.median(sk),
                         "http_ms": statistics.median(ht),
                         "added_ms": statistics.median(ht) - statistics.median(sk),
                         "seerd_peak_rss_mb": round(rss_mb(p.pid), 1)})
        finally:
            p.terminate()
            p.wait()
        # 2. Offload vs the llama.cpp server directly.
        lport = free_port()
        server = subprocess.Popen(
            [a.peers_python, "-m", "llama_cpp.server", "--model", a.llm, "--host", "127.0.0.1",
             "--port", str(lport), "--api_key", key, "--n_ctx", "2048", "--n_threads", str(a.threads)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(lport, "/v1/models", key)
            p, sock = start_seerd(
                a.seerd, tmp, "offload", a.llm, a.threads,
                f'[offload]\nmode = "only"\nurl = "http://127.0.0.1:{lport}/v1"\napi_key = "{key}"\n',
            )
            try:
                direct_body = {
                    "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
                    "max_tokens": 32, "temperature": 0, "stream": True,
                }
                socket_ttft(sock, -1)
                sse_ttft(lport, "/v1/chat/completions", key, direct_body)
                via, direct = [], []
                for i in range(a.rounds):
                    t, backend = socket_ttft(sock, i)
                    if backend != "remote":
                        raise SystemExit(f"offload turn answered by {backend}")
                    via.append(t)
                    direct.append(sse_ttft(lport, "/v1/chat/completions", key, direct_body))
                rows.append({"figure": "offload to llama.cpp server, first token",
                             "direct_ms": statistics.median(direct),
                             "via_seer_socket_ms": statistics.median(via),
                             "added_ms": statistics.median(via) - statistics.median(direct)})
            finally:
                p.terminate()
                p.wait()
        finally:
            server.terminate()
            server.wait()
    for r in rows:
        print(json.dumps(r))
    print()
    print(f"rounds: {a.rounds} (medians), threads: {a.threads}")
    print("| figure | baseline ms | through Seer ms | added ms |")
    print("|---|---|---|---|")
    r = rows[0]
    print(f"| HTTP API vs socket (local SmolLM2) | {r['socket_ms']:.1f} (socket) | {r['http_ms']:.1f} (HTTP) | {r['added_ms']:+.1f} |")
    r = rows[1]
    print(f"| offload vs llama.cpp server directly | {r['direct_ms']:.1f} (direct) | {r['via_seer_socket_ms']:.1f} (Seer socket → server) | {r['added_ms']:+.1f} |")


if __name__ == "__main__":
    main()
