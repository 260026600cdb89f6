"""docs/design.md §4's float-noise rule, for the bench and the tests.

Batched and single-token evaluation differ by float noise, so two exact strategies
may part ways at a near-tie of r. Greedy outputs agree if they are identical, or if
their first divergence is at a position whose top-2 margin in r, computed from
single-token decodes, is below NOISE_MARGIN.
"""

from __future__ import annotations

from collections.abc import Sequence

from .distributions import top2_margin
from .params import SamplingParams

NOISE_MARGIN = 5e-3


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first difference (or of the shorter one's end); None if identical."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def near_tie_margin(ens, prompt: Sequence[int], prefix: Sequence[int]) -> float:
    """Top-2 margin of r after prompt + prefix, the tokens after the prompt fed one per llama_decode."""
    rows = []
    for m in ens.members:
        m.prefill(prompt)
        row = None
        for t in [prompt[-1], *prefix]:
            row = m.evaluate([t], [0])[0]
        assert row is not None
        rows.append(row[: ens.n_vocab])
    return top2_margin(ens.spec.target(rows, SamplingParams(temperature=0)))


def margins_by_batching(
    ens, prompt: Sequence[int], prefix: Sequence[int], a: int, b: int, sizes: Sequence[int] = (1, 2, 4, 8, 16)
) -> dict[int, float]:
    """r(a) - r(b) after prompt + prefix, with its last s tokens fed as one batch, for each s in sizes.

    Tells noise from a bug where two greedy outputs part (a: one output's token, b: the other's).
    Batching noise shows as values within a few 1e-2 that change size and sign with s; a wrong
    verification shows a large margin of one sign under every batching (docs/design.md §4).
    """
    full = [*prompt, *prefix]
    out: dict[int, float] = {}
    for s in sizes:
        if s >= len(full):
            continue
        rows = []
        for m in ens.members:
            m.prefill(full[: len(full) - s + 1])  # the cache holds all but the last s tokens
            rows.append(m.evaluate(full[len(full) - s :], [s - 1])[0][: ens.n_vocab])
        r = ens.spec.target(rows, SamplingParams(temperature=0))
        out[s] = float(r[a] - r[b])
    return out


def agree(ens, prompt: Sequence[int], ref: Sequence[int], out: Sequence[int]) -> tuple[bool, float | None]:
    """(outputs agree under the rule, the margin at the first divergence or None if identical)."""
    i = first_divergence(ref, out)
    if i is None:
        return True, None
    margin = near_tie_margin(ens, prompt, ref[:i])
    return margin < NOISE_MARGIN, margin
