"""How generation degrades when another program keeps a core busy (issue 17, "busy machines").

Each measurement runs in a fresh process (OpenMP reads its settings when llama.cpp loads): load the
preset, read the prompt, then time `--tokens` greedy tokens, idle and with a busy-loop process
competing for the CPU. Prints a Markdown table; run it on an otherwise quiet machine.

    python scripts/busy_machine.py [--preset qwen2.5-coder-duo] [--tokens 30] [--strategy standard]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
from edge_specens import Ensemble
preset, tokens, strategy, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
kw = {} if threads == "default" else {"n_threads": int(threads), "n_threads_batch": int(threads)}
ens = Ensemble.from_preset(preset, n_ctx=1024, progress=False, **kw)
prompt = "Write a Python function that returns the n-th Fibonacci number."
ens.generate(prompt, max_tokens=2, temperature=0, strategy="standard")  # reads the prompt
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()  # the parent starts the competing load, then says go
r = ens.generate(prompt, max_tokens=tokens, temperature=0, strategy=strategy)
s = r.stats
print(json.dumps({"tok_s": s.new_tokens / max(s.seconds - s.prompt_seconds, 1e-9), "tokens": s.new_tokens}))
"""

CORES = os.cpu_count() or 1
VARIANTS = {  # name: (environment changes, threads: "default" = edge-specens' own choice)
    f"{CORES} threads, fixed (the default before)": ({}, str(CORES)),
    "threads follow the load (the default now)": ({}, "default"),
    f"{CORES} threads, OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, str(CORES)),
    f"{CORES} threads, GOMP_SPINCOUNT=10000": ({"GOMP_SPINCOUNT": "10000"}, str(CORES)),
    "1 thread, fixed": ({}, "1"),
}


def measure(preset: str, tokens: int, strategy: str, env_changes: dict, threads: str, busy: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_changes)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, preset, str(tokens), strategy, threads],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "ready"
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(0.5 if busy else 0.0)
        child.stdin.write("go\n")
        child.stdin.flush()
        out = child.stdout.readline()
        child.wait(600)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return json.loads(out)["tok_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="qwen2.5-coder-duo")
    ap.add_argument("--tokens", type=int, default=30)
    ap.add_argument("--strategy", default="standard")
    ap.add_argument("--variants", default=",".join(str(i) for i in range(len(VARIANTS))))
    a = ap.parse_args()
    names = list(VARIANTS)
    chosen = [names[int(i)] for i in a.variants.split(",")]
    print(f"{os.cpu_count()} cores; {a.preset}; {a.tokens} greedy tokens, strategy {a.strategy}\n")
    print("| setting | idle tok/s | one busy core tok/s | slowdown |")
    print("|---|---:|---:|---:|")
    for name in chosen:
        env_changes, threads = VARIANTS[name]
        idle = measure(a.preset, a.tokens, a.strategy, env_changes, threads, busy=False)
        busy = measure(a.preset, a.tokens, a.strategy, env_changes, threads, busy=True)
        print(f"| {name} | {idle:.1f} | {busy:.1f} | {idle / busy:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
