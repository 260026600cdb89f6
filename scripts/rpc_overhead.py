"""What a member on an RPC server costs over the same member in-process, on this machine (loopback).

Starts one `edge-specens rpc-server` per member on 127.0.0.1, loads each member both ways, and times,
interleaved (local, remote, local, ...), single-token decodes and 4- and 16-token batches at a
64-token context; then whole `standard` generations of the ensemble all-local and with the largest
member remote. Reports ms per decode and the difference (the RPC round trip: graph, embeddings in,
logits rows out, plus our helper process's pipe), as JSON and a Markdown table.

On loopback the server computes on the same cores as the client, so this isolates the protocol's
overhead; over a real network add the link's round trip (ping) per llama_decode, and 4 bytes x
n_vocab per logits row (0.6 MB at Qwen's 152k vocabulary: ~5 ms a row at 1 Gbit/s).

    .venv/bin/python scripts/rpc_overhead.py -p qwen2.5-coder-duo --out docs/bench/rpc-overhead
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edge_specens import Ensemble
from edge_specens.fetch import pull_preset
from edge_specens.member import Member, MemberOptions, default_threads
from edge_specens.presets import load_preset
from edge_specens.remote.endpoint import parse_endpoint, probe
from edge_specens.remote.member import RemoteMember
from edge_specens.threads import cpu_seconds

PROMPTS = [
    "Explain in two sentences why the sky is blue.",
    "Write a short haiku about a cat watching rain.",
    "List three tips for a first job interview.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_specens", "rpc-server", "--port", str(port), "-t", str(threads), "--no-cache"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    endpoint = f"127.0.0.1:{port}"
    for _ in range(300):
        try:
            probe(parse_endpoint(endpoint), timeout=1)
            return proc, endpoint
        except Exception:
            time.sleep(0.1)
    raise SystemExit("rpc-server did not start")


def family_cpu() -> float:
    """CPU seconds used so far by this process and every process it started (servers, helpers)."""
    tck = os.sysconf("SC_CLK_TCK")
    stats = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
                # own time and that of reaped children (helpers that exited): utime stime cutime cstime
                stats[int(d.name)] = (int(f[1]), sum(int(x) for x in f[11:15]) / tck)
            except (OSError, IndexError, ValueError):
                pass
    ours, total, frontier = {os.getpid()}, 0.0, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in ours:
                ours.add(pid)
                frontier.append(pid)
    for pid in ours:
        total += stats.get(pid, (0, 0.0))[1]
    return total


def time_member(m, context: list[int], batch: int, repeats: int) -> float:
    """Median seconds of one llama_decode of `batch` tokens (rows for all) after `context`."""
    m.truncate(0)
    m.evaluate(context, [])
    times = []
    for _ in range(repeats):
        toks = list(range(200, 200 + batch))
        t0 = time.perf_counter()
        m.evaluate(toks, list(range(batch)))
        times.append(time.perf_counter() - t0)
        m.truncate(len(context))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-p", "--preset", default="qwen2.5-coder-duo")
    ap.add_argument("--repeats", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per measurement")
    ap.add_argument("-n", "--max-tokens", type=int, default=96)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    paths = pull_preset(load_preset(args.preset), progress=False)
    threads = default_threads()
    servers = [start_server(threads) for _ in paths]
    busy0, fam0, t_start = cpu_seconds(), family_cpu(), time.perf_counter()
    out: dict = {"machine_threads": threads, "members": [], "generation": {}}
    try:
        context = list(range(1000, 1064))
        for path, (_, endpoint) in zip(paths, servers):
            opts = MemberOptions(n_ctx=512, n_threads=threads)
            local = Member(path, opts)
            remote = RemoteMember(path, MemberOptions(n_ctx=512, n_threads=threads, rpc=endpoint))
            row: dict = {"member": Path(path).name}
            for batch in (1, 4, 16):
                samples: dict[str, list[float]] = {"local": [], "remote": []}
                for _ in range(args.rounds):
                    for name, m in (("local", local), ("remote", remote)):
                        samples[name].append(time_member(m, context, batch, args.repeats))
                lo, re_ = statistics.median(samples["local"]), statistics.median(samples["remote"])
                row[f"batch{batch}"] = {"local_ms": lo * 1e3, "remote_ms": re_ * 1e3, "overhead_ms": (re_ - lo) * 1e3}
                print(
                    f"{row['member']} batch {batch:2d}: local {lo * 1e3:6.1f} ms, remote {re_ * 1e3:6.1f} ms",
                    flush=True,
                )
            out["members"].append(row)
            local.close()
            remote.close()
        # whole generations: all local vs the largest member remote (greedy standard, interleaved). Threads
        # are fixed: on loopback the server's work would look like another program's to the governor
        # (threads.py), which would then take threads from the local member
        big = max(range(len(paths)), key=lambda k: Path(paths[k]).stat().st_size)
        rpc = [servers[k][1] if k == big else None for k in range(len(paths))]
        ensembles = {
            "all local": Ensemble.from_preset(args.preset, progress=False, n_ctx=2048, n_threads=threads),
            f"{Path(paths[big]).name} remote": Ensemble.from_preset(
                args.preset, progress=False, n_ctx=2048, n_threads=threads, rpc=rpc
            ),
        }
        speeds: dict[str, list[float]] = {k: [] for k in ensembles}
        for _ in range(args.rounds):
            for prompt in PROMPTS:
                for name, ens in ensembles.items():
                    msgs = [{"role": "user", "content": prompt}]
                    r = ens.create_chat_completion(msgs, max_tokens=args.max_tokens, temperature=0, strategy="standard")
                    s = ens.last_result.stats
                    speeds[name].append(s.new_tokens / max(1e-9, s.seconds - s.prompt_seconds))
                    assert r["choices"][0]["message"]["content"] is not None
        for name, v in speeds.items():
            out["generation"][name] = {"tokens_per_second": statistics.median(v)}
            print(f"standard, {name}: {statistics.median(v):.1f} tok/s", flush=True)
        for ens in ensembles.values():
            ens.close()
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait()
    busy1, fam1, wall = cpu_seconds(), family_cpu(), time.perf_counter() - t_start
    if busy0 and busy1:
        other = max(0.0, (busy1[0] - busy0[0]) - (fam1 - fam0)) / (wall * (os.cpu_count() or 1))
        out["other_processes_cpu_share"] = round(other, 3)
        print(f"other processes used {other:.1%} of the CPU", flush=True)
    names = list(out["generation"])
    out["generation_ratio_remote_vs_local"] = (
        out["generation"][names[1]]["tokens_per_second"] / out["generation"][names[0]]["tokens_per_second"]
    )
    md = ["| member | batch | local ms | via RPC (loopback) ms | overhead ms |", "|---|---:|---:|---:|---:|"]
    for row in out["members"]:
        for b in (1, 4, 16):
            c = row[f"batch{b}"]
            md.append(
                f"| {row['member']} | {b} | {c['local_ms']:.1f} | {c['remote_ms']:.1f} | {c['overhead_ms']:+.1f} |"
            )
    md += ["", "| ensemble, greedy `standard` | tok/s |", "|---|---:|"]
    md += [f"| {k} | {v['tokens_per_second']:.1f} |" for k, v in out["generation"].items()]
    md.append(f"\nratio: {out['generation_ratio_remote_vs_local']:.3f}x; other processes: "
              f"{out.get('other_processes_cpu_share', 0):.1%} of the CPU")  # fmt: skip
    print("\n".join(md))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rpc_overhead.json").write_text(json.dumps(out, indent=2))
        (args.out / "rpc_overhead.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
