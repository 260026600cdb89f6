"""Re-score a recorded `edge-specens eval humaneval` run with the current harness, without any model.

eval.json keeps every problem's reply. This re-extracts the code from each reply and runs it in the
current sandbox, where the harness calls `check` itself and only a `check` that returns is a pass
(the study was scored by exit status, with the tests appended to the model's code). It prints, per
configuration, the old and new passed counts, the new paired comparison with the reference, and every
problem whose verdict changed, as Markdown:

    nice -n 10 .venv/bin/python scripts/rescore_study.py > docs/bench/eval-humaneval/rescore.md

A reply that was never produced (the prompt did not fit: status "error", empty reply) is not re-run
and keeps its failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edge_specens.quality.humaneval import check_reply, mcnemar_p, problems
from edge_specens.quality.sandbox import require_sandbox, sandbox_setting

DEFAULT = Path(__file__).resolve().parent.parent / "docs/bench/eval-humaneval/eval.json"


def rescore(data: dict, by_id: dict, workers: int, unsafe: bool) -> dict[str, dict[str, dict]]:
    """{config: {task_id: {"passed", "status", "detail"}}} under the current harness."""
    jobs = []
    for key, config in data["configs"].items():
        for task, rec in config["problems"].items():
            jobs.append((key, task, rec))
    out: dict[str, dict[str, dict]] = {key: {} for key in data["configs"]}

    def one(job):
        key, task, rec = job
        if rec.get("status") == "error" and not rec.get("reply"):
            return key, task, {"passed": False, "status": "error", "detail": "no reply recorded (not re-run)"}
        o = check_reply(by_id[task], rec.get("reply") or "", unsafe=unsafe)
        return key, task, {"passed": o.passed, "status": o.status, "detail": o.detail}

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, (key, task, res) in enumerate(pool.map(one, jobs), 1):
            out[key][task] = res
            if i % 100 == 0 or i == len(jobs):
                print(f"{i}/{len(jobs)} programs, {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return out


def report(data: dict, new: dict[str, dict[str, dict]], reference: str, seconds: float, sandbox: str) -> str:
    keys = list(data["configs"])
    tasks = sorted({t for k in keys for t in data["configs"][k]["problems"]}, key=lambda t: int(t.split("/")[1]))
    lines = [
        "# HumanEval study re-scored with the current harness",
        "",
        f"`scripts/rescore_study.py` re-ran every recorded reply of `eval.json` ({len(keys)} configurations, "
        f"{len(tasks)} problems, {sum(len(v) for v in new.values())} programs, {seconds:.0f} s) in the sandbox "
        f"({sandbox}). The harness now calls `check(entry_point)` itself and counts a pass only when `check` "
        "returns (a per-run token written after it); the study was scored by the exit status of the model's code "
        "with the tests appended. No model was run: the replies are the recorded ones.",
        "",
        f"| configuration | old passed | new passed | change | new won / lost vs `{reference}` | new McNemar p |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ref_new = new[reference]
    for key in keys:
        old = data["configs"][key]["problems"]
        cur = new[key]
        o = sum(old[t]["passed"] for t in old)
        n = sum(cur[t]["passed"] for t in cur)
        won = sum(cur[t]["passed"] and not ref_new[t]["passed"] for t in cur if t in ref_new)
        lost = sum(ref_new[t]["passed"] and not cur[t]["passed"] for t in cur if t in ref_new)
        p = mcnemar_p(won, lost)
        lines.append(
            f"| {data['configs'][key]['describe']} (`{key}`) | {o}/{len(old)} | {n}/{len(cur)} | {n - o:+d} | "
            f"{won} / {lost} | {p:.3g} |"
        )
    changed = [
        (key, t, data["configs"][key]["problems"][t], new[key][t])
        for key in keys
        for t in tasks
        if t in new[key] and data["configs"][key]["problems"][t]["passed"] != new[key][t]["passed"]
    ]
    lines += ["", f"## Verdicts that changed ({len(changed)})", ""]
    if not changed:
        lines.append("None: every recorded reply gets the verdict it had.")
    else:
        lines += ["| configuration | problem | old | new | new detail |", "|---|---|---|---|---|"]
        for key, t, old, cur in changed:
            detail = cur["detail"].replace("|", "\\|")
            lines.append(f"| `{key}` | {t} | {old['status']} | {cur['status']} | {detail} |")
    statuses: dict[str, int] = {}
    for cur in new.values():
        for r in cur.values():
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    lines += ["", "New statuses over all programs: " + ", ".join(f"{s} {n}" for s, n in sorted(statuses.items()))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("eval_json", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--workers", type=int, default=2, help="programs run side by side (default 2)")
    ap.add_argument("--unsafe-no-sandbox", action="store_true", help="run without the OS sandbox")
    args = ap.parse_args(argv)
    require_sandbox(args.unsafe_no_sandbox)
    data = json.loads(args.eval_json.read_text())
    by_id = {p["task_id"]: p for p in problems(None)}
    reference = data.get("summary", {}).get("reference") or next(iter(data["configs"]))
    t0 = time.monotonic()
    new = rescore(data, by_id, max(1, args.workers), args.unsafe_no_sandbox)
    sys.stdout.write(report(data, new, reference, time.monotonic() - t0, sandbox_setting(args.unsafe_no_sandbox)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
