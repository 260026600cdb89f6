"""The bench's report: machine and memory facts, and bench.json / bench.md / bench.png writers.

Writers take the dict `bench.run_bench` returns; matplotlib is imported only to draw.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ..threads import cpu_seconds


# ---------------------------------------------------------------------------- memory
def rss_bytes() -> int | None:
    """Current resident set size (VmRSS) from /proc/self/status; None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_breakdown() -> dict:
    """VmRSS split into anonymous memory and mapped files (mmapped weights), in bytes (Linux)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                    out[key] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process (getrusage ru_maxrss: KiB on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:
        return None
    v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(v if sys.platform == "darwin" else v * 1024)


# ---------------------------------------------------------------------------- machine and memory
class CpuMonitor:
    """How much of the machine's CPU other processes used while the bench ran (Linux /proc/stat).

    On a small machine any other busy process distorts the timings (llama.cpp's threads wait on
    each other), so the report states it instead of leaving it to guesswork.
    """

    def __init__(self):
        self.t0 = time.perf_counter()
        self.start = cpu_seconds()

    def result(self) -> dict:
        now = cpu_seconds()
        if now is None or self.start is None:
            return {}
        (busy, steal, own), (busy0, steal0, own0) = now, self.start
        capacity = (time.perf_counter() - self.t0) * (os.cpu_count() or 1)
        other = max(0.0, (busy - busy0) - (own - own0))
        return dict(
            other_processes_cpu_share=_r(other / capacity, 3),
            steal_share=_r((steal - steal0) / capacity, 3),
            bench_cpu_share=_r((own - own0) / capacity, 3),
        )


def memory_info(ens, rss_at_start: dict) -> dict:
    files = sum(_size(m.path) or 0 for m in ens.members)
    peak = peak_rss_bytes()
    return dict(
        model_files_bytes=files,
        peak_rss_bytes=peak,
        rss_at_start=rss_at_start,
        rss_now=rss_breakdown(),
        peak_rss_over_model_files=_r(peak / files) if peak and files else None,
        n_ctx=ens.n_ctx,
        note="peak RSS of the whole bench process (Python, NumPy, llama.cpp, mmapped weights) "
        "before matplotlib is imported, over the sum of the member files",
    )


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return (
                subprocess.run(
                    ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
                ).stdout.strip()
                or platform.processor()
            )
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        p = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in p.stdout.splitlines() if line.strip()] if p.returncode == 0 else []


def machine_info(ens) -> dict:
    from ..member import default_threads

    version: str | None
    system: str | None
    try:
        import llama_cpp

        version = llama_cpp.__version__
        system = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    except Exception:  # pragma: no cover - llama_cpp is a hard dependency
        version = system = None
    opts = ens.members[0].options
    threads = opts.n_threads or default_threads()
    return dict(
        cpu=cpu_model(),
        cores=os.cpu_count(),
        threads=threads,
        threads_batch=opts.n_threads_batch or threads,
        n_gpu_layers=opts.n_gpu_layers,
        gpu=gpu_names() or None,
        llama_cpp_python=version,
        llama_cpp_system_info=system,
        platform=platform.platform(),
        python=platform.python_version(),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _r(x, nd: int = 4):
    return None if x is None else round(float(x), nd)


def _size(p) -> int | None:
    try:
        return os.path.getsize(p)
    except OSError:
        return None


# ---------------------------------------------------------------------------- writers
WORKLOAD_TITLES = {
    "humaneval": "HumanEval prompts",
    "chat": "chat prompts",
    "custom": "custom prompts",
}
SETTING_TITLES = {
    "we-t0": "WE, T = 0 (greedy)",
    "we-t0.8": "WE, T = 0.8",
    "we-t1": "WE, T = 1",
    "cd-t0": "CD, T = 0 (greedy)",
    "cd-t1": "CD, T = 1",
}


def write_all(report: dict, out: str | os.PathLike) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "bench.json", out / "bench.md", out / "bench.png"]
    paths[0].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(report), encoding="utf-8")
    write_png(report, paths[2])
    return paths


# ---------------------------------------------------------------------------- markdown
def _f(x, fmt: str = "{:.2f}", none: str = "n/a") -> str:
    return none if x is None else fmt.format(x)


def _list(xs) -> str:
    return "/".join(f"{x:.2f}" for x in xs) if xs else "n/a"


def _labels(report: dict) -> list[str]:
    return report["config"].get("row_labels") or [r["strategy"] for r in report["rows"]]


def workload_title(report: dict) -> str:
    """What the prompts were, for titles ("HumanEval prompts" for reports written before workloads)."""
    w = report["config"].get("workload", "humaneval")
    return WORKLOAD_TITLES.get(w, f"{w} prompts")


def markdown_table(report: dict) -> str:
    """One table per setting: what the CLI prints and what bench.md is built around."""
    settings = {s["id"]: s for s in report["config"]["settings"]}
    blocks = []
    rows = list(zip(report["rows"], _labels(report)))
    for sid in dict.fromkeys(r["setting"] for r, _ in rows):
        st = settings.get(sid, {})
        members = ", ".join(st.get("members", []))
        detail = f"weights {st['weights']}" if "weights" in st else f"mu {st.get('mu')}, expert first"
        if "top_k" in st:
            detail += f", top-k {st['top_k']}, top-p {st['top_p']}, min-p {st['min_p']}"
        lines = [
            f"### {SETTING_TITLES.get(sid, sid)} — {detail}; members: {members}",
            "",
            "| strategy | gamma | tok/s | speed-up | predicted | acceptance | calls/token | tokens/token "
            "| identical | overhead | RSS MiB | peak RSS MiB |",
            "|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|",
        ]
        for r, lab in rows:
            if r["setting"] != sid:
                continue
            gamma = ",".join(map(str, r["gamma"])) if r["gamma"] else "–"
            if r["strategy"] == "auto" and r.get("algorithm"):
                gamma = r["algorithm"] + ("" if gamma == "–" else f" {gamma}") + (" ∥" if r.get("parallel") else "")
            if r.get("lookup"):
                gamma += f" +L{r['lookup']}" + (
                    f" ({r['lookup_token_share']:.0%})" if r.get("lookup_token_share") else ""
                )
            lines.append(
                f"| {lab} | {gamma} | {_f(r['tokens_per_second'], '{:.1f}')} | "
                f"{_f(r['speedup_vs_standard'], '{:.2f}×')} | {_f(r['predicted_speedup'], '{:.2f}×')} | "
                f"{_f(r['acceptance_rate'], '{:.0%}', '–')} | {_list(r['member_calls_per_token'])} | "
                f"{_list(r['member_tokens_per_token'])} | {_f(r['identical_to_standard'], '{:.0%}', '–')} | "
                f"{_f(r['overhead_fraction'], '{:.1%}')} | {_f(r['rss_mb'], '{:.0f}')} | "
                f"{_f(r['peak_rss_mb'], '{:.0f}')} |"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def markdown(report: dict) -> str:
    m, c, mem = report["machine"], report["config"], report.get("memory", {})
    gpu = ", ".join(m["gpu"]) if m.get("gpu") else "none"
    out = [
        f"# edge-specens bench: {c['ensemble']}, {workload_title(report)}",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} logical cores, {m['threads']} threads "
        f"({m['threads_batch']} for batches), n_gpu_layers {m['n_gpu_layers']}, GPU: {gpu}",
        f"- llama-cpp-python {m['llama_cpp_python']}; {m['platform']}; Python {m['python']}; {m['date']}",
        f"- Prompts: {c['n_prompts']} {workload_title(report)} ({_prompt_range(c['prompts'])}), "
        f"up to {c['max_tokens']} new tokens each, "
        f"seed {c['seed']} + prompt index; n_ctx {c['n_ctx']}, {c['kv_cache']} KV cache"
        f"{'; --quick' if c.get('quick') else ''}; bench wall time {c['wall_seconds']:.0f} s",
        _load_line(m),
        "- Every prompt runs every strategy of a setting, the order rotating from prompt to prompt; the prompt "
        "(minus its last token) is prefilled untimed before each run, after an untimed warm-up.",
        "",
        "**Definitions.** speed-up = (total generated tokens / total seconds) of the row divided by the same ratio "
        "for `standard` in the same setting, over the same prompts in the same run. tok/s = mean over prompts. "
        "gamma = proposal length per member in the setting's member order (CD: expert first); strategy names "
        "write se gammas proposer first; +L15 = up to 15 free prompt-lookup drafts a round, verified like any draft "
        "(in brackets: the share of generated tokens that were accepted lookup drafts). side by side = the "
        "members run at the same time, each on its own thread; other rows run them one after the other, "
        "except auto, which decides (∥: most of its runs ran side by side). calls/token and "
        "tokens/token = llama_decode calls and evaluated tokens per generated token, per member. identical = "
        "T = 0 share of prompts equal to `standard` under docs/design.md §4's noise rule (first divergence "
        "at a top-2 margin < 5e-3 is excused). overhead = 1 − time inside "
        "llama_decode / wall time. predicted = the scheduler's prediction (auto: what its own "
        "predictions add up to, run by run, its warm-up at standard's speed; n/a: none).",
        "",
        markdown_table(report),
        "",
        "![speed-up per strategy](bench.png)",
        "",
    ]
    if mem:
        files, peak = mem.get("model_files_bytes"), mem.get("peak_rss_bytes")
        out += [
            "## Memory",
            "",
            f"Peak RSS {_mib(peak)} MiB vs model files {_mib(files)} MiB: ratio "
            f"{_f(mem.get('peak_rss_over_model_files'))} at n_ctx {mem.get('n_ctx')} (whole bench process, "
            f"before matplotlib is imported).",
            "",
        ]
        for when, key in (("after loading", "rss_at_start"), ("at the end", "rss_now")):
            b = mem.get(key) or {}
            if b:
                out.append(
                    f"- RSS {when}: {_mib(b.get('VmRSS'))} MiB = anonymous {_mib(b.get('RssAnon'))} MiB "
                    f"+ mapped files {_mib(b.get('RssFile'))} MiB"
                )
        out.append("")
    div = report.get("divergences") or []
    if div:
        bad = [d for d in div if not d["excused"]]
        out += [
            "## T = 0 divergences from standard",
            "",
            f"{len(div)} divergent outputs, {len(div) - len(bad)} excused as near-ties "
            f"(margin < 5e-3), {len(bad)} not excused.",
            "",
            "| setting | strategy | prompt | position | margin | excused |",
            "|---|---|---|---:|---:|---|",
        ]
        out += [
            f"| {d['setting']} | {d['strategy']} | {d['prompt']} | {d['position']} | {d['margin']:.2e} | "
            f"{'yes' if d['excused'] else 'no'} |"
            for d in div
        ]
        out.append("")
    return "\n".join(out)


def _load_line(m: dict) -> str:
    load = m.get("load_during_bench") or {}
    other = load.get("other_processes_cpu_share")
    if other is None:
        return "- CPU used by other processes during the bench: unknown"
    warn = " — **timings disturbed by other work on the machine**" if other > 0.05 else ""
    return (
        f"- CPU used by other processes during the bench: {other:.1%} of the machine "
        f"(steal {load.get('steal_share', 0):.1%}; the bench itself {load.get('bench_cpu_share', 0):.0%}){warn}"
    )


def _mib(b) -> str:
    return "n/a" if not b else f"{b / 2**20:.0f}"


def _prompt_range(ids) -> str:
    return ids[0] if len(ids) == 1 else f"{ids[0]} … {ids[-1]}"


# ---------------------------------------------------------------------------- chart
def write_png(report: dict, path: str | os.PathLike) -> None:
    """Grouped bars: speed-up of each strategy (x) per setting (colour); standard ensemble = 1.0."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = list(zip(report["rows"], _labels(report)))
    labels = list(dict.fromkeys(lab for _, lab in rows))
    settings = list(dict.fromkeys(r["setting"] for r, _ in rows))
    value = {(r["setting"], lab): r["speedup_vs_standard"] for r, lab in rows}
    width = 0.8 / max(len(settings), 1)
    fig, ax = plt.subplots(figsize=(min(16.0, max(7.0, 0.3 * len(labels) * len(settings) + 2)), 5.5))
    for j, sid in enumerate(settings):
        xs = [i + (j - (len(settings) - 1) / 2) * width for i in range(len(labels))]
        ys = [value.get((sid, lab)) or 0.0 for lab in labels]
        bars = ax.bar(xs, ys, width, label=SETTING_TITLES.get(sid, sid))
        if len(labels) * len(settings) <= 64:
            ax.bar_label(bars, labels=[f"{y:.2f}" if y else "" for y in ys], fontsize=6, padding=1, rotation=90)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="standard ensemble = 1.0")
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("speed-up vs standard (tokens/s ratio)")
    c, m = report["config"], report["machine"]
    ax.set_title(
        f"{c['ensemble']}: {c['n_prompts']} {workload_title(report)} × {c['max_tokens']} tokens\n"
        f"{m['cpu']}, {m['threads']} threads, ngl {m['n_gpu_layers']}",
        fontsize=9,
    )
    top = max([v for v in value.values() if v] + [1.0])
    ax.set_ylim(0, top * 1.18)
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
