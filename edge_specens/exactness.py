"""docs/design.md §4's float-noise rule, for the bench and the tests.

Batched and single-token evaluation differ by float noise, so two exact strategies
may part ways at a near-tie of r. Greedy outputs agree if they are identical, or if
their first divergence is at a position whose top-2 margin in r, computed from
single-token decodes, is below NOISE_MARGIN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .distributions import top2_margin
from .params import SamplingParams

NOISE_MARGIN = 5e-3


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first difference (or of the shorter one's end); None if identical."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _greedy_r(ens, rows: Sequence[np.ndarray | None]) -> np.ndarray:
    """r at T = 0 from one logits row per member (cut to the shared vocabulary; None: a follower abstains)."""
    cut = [row[: ens.n_vocab] if row is not None else None for row in rows]
    return ens.spec.target(cut, SamplingParams(temperature=0))


def _r_fed_in_chunks(ens, prompt: Sequence[int], prefix: Sequence[int], size: int) -> np.ndarray:
    """Greedy r after prompt + prefix: the prompt prefilled as usual, then [last prompt token, *prefix]
    in consecutive chunks of `size` tokens (1: one token per llama_decode, the noise rule's way)."""
    seq = [prompt[-1], *prefix]
    rows: list[np.ndarray | None] = []
    for m in ens.members:
        m.prefill(prompt)
        row = None
        for start in range(0, len(seq), size):
            chunk = seq[start : start + size]
            row = m.evaluate(chunk, [len(chunk) - 1])[0]
        rows.append(row)
    return _greedy_r(ens, rows)


def near_tie_margin(ens, prompt: Sequence[int], prefix: Sequence[int]) -> float:
    """Top-2 margin of r after prompt + prefix, the tokens after the prompt fed one per llama_decode."""
    return top2_margin(_r_fed_in_chunks(ens, prompt, prefix, 1))


def margins_by_batching(
    ens, prompt: Sequence[int], prefix: Sequence[int], a: int, b: int, sizes: Sequence[int] = (1, 2, 4, 8, 16)
) -> dict[int, float]:
    """r(a) - r(b) after prompt + prefix, with its last s tokens fed as one batch, for each s in sizes.

    Tells noise from a bug where two greedy outputs part (a: one output's token, b: the other's).
    Batching noise shows as values within a few 1e-2 that change size and sign with s; a wrong
    verification shows a large margin of one sign under every batching (docs/design.md §4).
    Everything before the last s tokens is fed one token per decode, whatever the cache held before,
    so s = 1 is near_tie_margin's single-decode margin with its sign.
    """
    full = [*prompt, *prefix]
    sizes = [s for s in sizes if s < len(full)]
    rows: dict[int, list[np.ndarray | None]] = {s: [] for s in sizes}
    for m in ens.members:
        m.prefill(prompt)  # the cache holds the prompt but its last token
        for t in full[len(m.tokens) : -1]:
            m.evaluate([t], [])
        for s in sorted(sizes):  # growing s cuts further back, past every entry an earlier batch wrote
            m.truncate(len(full) - s)  # keep what came before, one token per decode; batch the last s
            rows[s].append(m.evaluate(full[len(full) - s :], [s - 1])[0])
    rs = {s: _greedy_r(ens, rows[s]) for s in sizes}
    return {s: float(r[a] - r[b]) for s, r in rs.items()}


def margins_by_chunking(
    ens, prompt: Sequence[int], prefix: Sequence[int], a: int, b: int, sizes: Sequence[int] = (2, 4, 8, 16)
) -> dict[int, float]:
    """r(a) - r(b) after prompt + prefix, with the whole prefix fed in chunks of s tokens, for each s.

    margins_by_batching re-batches only the last tokens; a speculative run verifies its whole output
    in blocks of gamma+1, so every KV entry behind the divergence carries batching noise. This replays
    that: the prompt prefilled as usual, then [last prompt token, *prefix] in consecutive chunks of s.
    At s = 1 it is the single-decode margin with its sign.
    """
    rs = {s: _r_fed_in_chunks(ens, prompt, prefix, s) for s in sizes}
    return {s: float(r[a] - r[b]) for s, r in rs.items()}


def agree(ens, prompt: Sequence[int], ref: Sequence[int], out: Sequence[int]) -> tuple[bool, float | None]:
    """(outputs agree under the rule, the margin at the first divergence or None if identical)."""
    i = first_divergence(ref, out)
    if i is None:
        return True, None
    margin = near_tie_margin(ens, prompt, ref[:i])
    return margin < NOISE_MARGIN, margin
