"""Measure what a k-token batch costs each member on this machine (docs/design.md §6).

The paper's speed-up formula assumes a batch costs as much as one token. That holds
on a GPU and fails on a small CPU, where k tokens cost about k single decodes. So
`auto` decides from measured curves: cost_k(b) = seconds for one llama_decode of b
tokens with logits at every position, b = 1..16. A curve is measured once per model
file, machine, thread counts and offload, and cached in the model cache folder.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..member import pinned

MAX_BATCH = 16
POINTS = (1, 2, 3, 4, 6, 8, 12, 16)  # measured; the rest interpolated
# side-by-side curves: one set per thread split, measured on few threads, so fewer points and a
# shorter context to read first (~10 s for the duo on a 2-core CPU; attention at 64 vs 256 tokens
# differs by ~2% for these models)
SIDE_BY_SIDE_POINTS = (1, 2, 4, 8, 16)
SIDE_BY_SIDE_CONTEXT = 64
CONTEXT = 256  # tokens already in the cache while measuring: a long prompt + answer position
# ...and a short one. A batch costs more once the cache holds more than 256 tokens: llama.cpp pads
# the attended KV cells to a multiple of 256, so past 256 every layer attends over 512. Measured on
# a 2-core Xeon: the duo's 0.5B 44 ms a token at 60-128 tokens in, 56 ms at 257-512 (the 1.5B 73 vs
# 78 ms). Curves at CONTEXT alone overstated a chat answer's costs by a fifth, most of all the small
# proposer's, and auto's predictions with them (issue 30); the scheduler blends the two by where a
# generation runs (Scheduler.curves_at).
SHORT_CONTEXT = 64


@dataclass(frozen=True)
class CostCurve:
    """seconds[b - 1] = measured seconds of one b-token batch (logits at every position)."""

    seconds: tuple[float, ...]

    def __call__(self, b: int) -> float:
        if b <= MAX_BATCH:
            return self.seconds[b - 1]
        # beyond the measured range: member.evaluate splits it into 16-row decodes, each at the 16-token rate
        return b * self.seconds[-1] / MAX_BATCH

    def at(self, b: float) -> float:
        """Seconds of a batch of b tokens for a fractional b (an average batch size): linear between
        the whole sizes around it."""
        lo = max(1, int(b))
        frac = max(0.0, b - lo)
        return self(lo) + frac * (self(lo + 1) - self(lo)) if frac else self(lo)

    def ratio(self, b: int) -> float:
        """Cost of a b-token batch relative to b single decodes (docs/design.md §6's table)."""
        return self(b) / (b * self.seconds[0])


def _machine_key(member, context: int = CONTEXT) -> str:
    o = member.options
    try:
        import llama_cpp

        version = llama_cpp.__version__
    except Exception:
        version = "?"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    st = member.path.stat()
    return "|".join(
        map(
            str,
            (
                member.path.name,
                st.st_size,
                cpu,
                os.cpu_count(),
                o.n_threads,
                o.n_threads_batch,
                o.n_gpu_layers,
                o.flash_attn,
                o.kv_f32,
                version,
                f"ctx{_position(member, context)}",
            ),
        )
    ) + (f"|rpc {o.rpc}" if getattr(o, "rpc", None) else "")  # the network's latency is part of the cost


def _position(member, context: int = CONTEXT) -> int:
    """Where batches are timed: `context` tokens in, or less if the context is smaller."""
    return max(0, min(context, member.n_ctx - MAX_BATCH))


def _store() -> Path:
    """Where curves are kept: $EDGE_SPECENS_CALIBRATION, else calibration.json in the model cache."""
    env = os.environ.get("EDGE_SPECENS_CALIBRATION")
    if env:
        return Path(env).expanduser()
    from ..fetch import cache_dir

    return cache_dir() / "calibration.json"


def load_cached(member, key: str = "", context: int = CONTEXT) -> CostCurve | None:
    try:
        data = json.loads(_store().read_text())
        return CostCurve(tuple(data[_machine_key(member, context) + key]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(member, curve: CostCurve, key: str = "", context: int = CONTEXT) -> None:
    path = _store()
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        data = {}
    data[_machine_key(member, context) + key] = list(curve.seconds)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only means we measure again next time


def measure(member, repeats: int = 3, points_wanted: tuple[int, ...] = POINTS, context: int = CONTEXT) -> CostCurve:
    """Time batches of POINTS sizes after a CONTEXT-token prefix. Leaves the cache empty.

    Sizes are interleaved across rounds and the fastest of `repeats` is kept: other load on
    the machine only ever adds time, so the minimum is the least disturbed estimate.
    """
    member = getattr(member, "inner", member)  # a follower (vocabulary/) is timed on its own tokens
    rng = np.random.default_rng(0)
    vocab = min(member.n_vocab, 30000)
    position = _position(member, context)
    prefix = [int(t) for t in rng.integers(100, vocab, position + 1)]
    member.truncate(0)
    member.evaluate(prefix, [position])  # warm-up included
    points = [b for b in points_wanted if position + b <= member.n_ctx]  # all of them unless n_ctx < 16
    batches = {b: [int(t) for t in rng.integers(100, vocab, b)] for b in points}
    measured = {b: float("inf") for b in points}
    for _ in range(repeats):
        for b, toks in batches.items():
            member.truncate(position)
            t0 = time.perf_counter()
            member.evaluate(toks, range(b))
            measured[b] = min(measured[b], time.perf_counter() - t0)
    member.truncate(0)
    xs = np.array(points, dtype=float)
    ys = np.array([measured[b] for b in points])
    bs = np.arange(1, MAX_BATCH + 1)
    curve = np.where(bs <= xs[-1], np.interp(bs, xs, ys), bs * ys[-1] / xs[-1])
    return CostCurve(tuple(float(v) for v in curve))


def cost_curve(member, *, force: bool = False, context: int = CONTEXT) -> CostCurve:
    """The member's curve `context` tokens in: from the cache, else measured now (a few seconds) and cached."""
    if not force:
        cached = load_cached(member, context=context)
        if cached is not None:
            return cached
    curve = measure(member, context=context)
    save(member, curve, context=context)
    return curve


def blend(short: CostCurve, long: CostCurve, f: float) -> CostCurve:
    """The curve of a generation that spends the share f of its positions past CONTEXT."""
    return CostCurve(tuple((1.0 - f) * a + f * b for a, b in zip(short.seconds, long.seconds)))


def side_by_side_curves(members, threads, workers, *, force: bool = False) -> list[CostCurve]:
    """Each member's curve at its share of a thread split, measured while every other member decodes
    beside it on its own worker: what a side-by-side schedule really pays. Members share memory
    bandwidth and caches, and on some CPUs two threads of one core; measured apart, a 2-core
    machine's members looked 1.3x faster than they ran together. Cached like cost_curve."""
    key = f"|side-by-side {','.join(map(str, threads))} with {','.join(m.path.name for m in members)}"
    key += f" ctx{SIDE_BY_SIDE_CONTEXT}"
    cached = [None if force else load_cached(m, key) for m in members]
    if all(c is not None for c in cached):
        return cached  # type: ignore[return-value]
    curves = []
    with pinned(members, threads):
        for k, m in enumerate(members):
            stop = threading.Event()
            busy = [workers.submit(j, _decode_until, o, stop) for j, o in enumerate(members) if j != k]
            try:
                curve = measure(m, repeats=2, points_wanted=SIDE_BY_SIDE_POINTS, context=SIDE_BY_SIDE_CONTEXT)
            finally:
                stop.set()
                workers.gather(busy)
            save(m, curve, key)
            curves.append(curve)
    return curves


def _decode_until(member, stop: threading.Event) -> None:
    """Single-token decodes (the typical side-by-side load) until stop is set; leaves the cache empty."""
    member = getattr(member, "inner", member)  # a follower (vocabulary/): its own tokens
    member.truncate(0)
    member.evaluate(list(range(100, 132)), [])
    while not stop.is_set():
        member.evaluate([200], [0])
        member.truncate(32)
    member.truncate(0)


# The controller's own work per step, timed on synthetic rows (pure NumPy, no model): computing r
# at a committed position, and a member's proposal q for each draft. Rounded to CONTROLLER_QUANTUM
# so that a seeded run's decision does not hinge on a few microseconds of timing jitter.
CONTROLLER_QUANTUM = 5e-5


def controller_costs(spec, n_vocab: int, sampling, repeats: int = 5) -> tuple[float, float]:
    """(seconds per committed token, seconds per member draft) of the controller on this machine.

    Every strategy computes r once per committed token; each draft also needs its proposer's q: at
    T > 0 a softmax and the truncation filters over the whole vocabulary (~1 ms for 151k tokens on a
    laptop core, 1-3 % of a small model's decode), at T = 0 an argmax. The fastest of `repeats`
    is kept, as for the curves: other load only ever adds time."""
    from ..params import proposal

    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(n_vocab).astype(np.float32) * 3.0 for _ in range(len(spec.weights))]
    greedy = sampling.greedy
    target, draft = float("inf"), float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = spec.target(rows, sampling)
        if greedy:
            int(np.argmax(r))
        t1 = time.perf_counter()
        if greedy:
            int(np.argmax(rows[0]))
        else:
            proposal(rows[0], sampling)
        t2 = time.perf_counter()
        target, draft = min(target, t1 - t0), min(draft, t2 - t1)
    q = CONTROLLER_QUANTUM
    return round(target / q) * q, round(draft / q) * q
