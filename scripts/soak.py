"""Soak `edge-specens serve`: N requests with mixed strategies, temperatures, stop strings, streaming
and chat, sampling the server's RSS as it goes. A server runs for weeks; its memory must stay flat.

    python scripts/soak.py [--requests 2000] [-m a.gguf -m b.gguf | -p PRESET] [--out soak_out]

Without -m/-p it builds the tests' two tiny random-weight models, so the soak measures edge-specens'
own bookkeeping (caches, the scheduler's memo, the server's queues) at thousands of requests a minute.
Writes soak.json and soak.png (RSS against requests) to --out and prints the curve.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def request(rng: random.Random, i: int) -> tuple[str, dict]:
    strategy = rng.choice(["auto", "auto", "se", "sd", "standard", "single"])
    body: dict = {
        "max_tokens": rng.choice([4, 8, 16, 24]),
        "temperature": rng.choice([0, 0, 0.7, 1.0]),
        "strategy": strategy,
        "stream": rng.random() < 0.3,
    }
    if rng.random() < 0.5:
        body["seed"] = rng.randrange(10**6)
    if strategy == "se":
        body["gamma"] = [rng.randint(1, 8), rng.randint(1, 3)]
        body["lookup"] = rng.choice([0, 0, 8, 15])
    if strategy == "sd":
        body["gamma"] = rng.randint(1, 8)
    if rng.random() < 0.2:
        body["stop"] = [f"stop{rng.randrange(1000)}"]
    words = " ".join(rng.choice(["hello", "world", "def", "return", "value", "self", str(i)]) for _ in range(12))
    if rng.random() < 0.5:
        return "/v1/chat/completions", {**body, "messages": [{"role": "user", "content": words}]}
    return "/v1/completions", {**body, "prompt": words}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("-m", "--model", action="append", default=[])
    ap.add_argument("-p", "--preset", default=None)
    ap.add_argument("--every", type=int, default=100, help="sample RSS every this many requests")
    ap.add_argument("--out", default="soak_out")
    a = ap.parse_args()
    if a.preset:
        models = ["-p", a.preset]
    elif a.model:
        models = [x for m in a.model for x in ("-m", m)]
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from gguf_factory import SIMPLE_CHAT_TEMPLATE, write_tiny_llama

        tmp = Path(tempfile.mkdtemp())
        small = write_tiny_llama(tmp / "small.gguf", seed=1, n_embd=32, chat_template=SIMPLE_CHAT_TEMPLATE)
        big = write_tiny_llama(tmp / "big.gguf", seed=2, n_embd=64, n_layer=3, chat_template=SIMPLE_CHAT_TEMPLATE)
        models = ["-m", str(small), "-m", str(big)]
    server = subprocess.Popen(
        [sys.executable, "-m", "edge_specens", "serve", *models, "-c", "512", "--port", "0"],
        stdout=subprocess.DEVNULL,  # uvicorn's access log
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = None
        while url is None:
            line = server.stderr.readline()
            if not line:
                raise SystemExit("the server did not start")
            m = re.search(r"at (http://[^ ]+)/v1", line)
            url = m.group(1) if m else None
        threading.Thread(target=server.stderr.read, daemon=True).start()  # keep draining the log
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        rng = random.Random(0)
        curve = [(0, rss_mib(server.pid))]
        statuses: dict[int, int] = {}
        t0 = time.monotonic()
        with httpx.Client(base_url=url, timeout=120) as client:
            for i in range(1, a.requests + 1):
                path, body = request(rng, i)
                r = client.post(path, json=body)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if i % a.every == 0:
                    curve.append((i, rss_mib(server.pid)))
                    print(f"{i:6d} requests  RSS {curve[-1][1]:7.1f} MiB  {time.monotonic() - t0:6.0f} s", flush=True)
        health = httpx.get(f"{url}/health", timeout=10).json()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    first_half = [r for n, r in curve if 0 < n <= a.requests // 2]
    report = {
        "requests": a.requests,
        "models": models,
        "statuses": statuses,
        "health": health,
        "rss_mib": curve,
        "rss_growth_second_half_mib": round(curve[-1][1] - max(first_half), 1) if first_half else None,
        "seconds": round(time.monotonic() - t0, 1),
    }
    (out / "soak.json").write_text(json.dumps(report, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot([n for n, _ in curve], [r for _, r in curve], marker=".")
        ax.set_xlabel("requests")
        ax.set_ylabel("server RSS (MiB)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"edge-specens serve: {a.requests} mixed requests")
        fig.tight_layout()
        fig.savefig(out / "soak.png", dpi=100)
    except ImportError:
        pass
    print(json.dumps({k: v for k, v in report.items() if k != "rss_mib"}))


if __name__ == "__main__":
    main()
