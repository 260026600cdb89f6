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


def agree(ens, prompt: Sequence[int], ref: Sequence[int], out: Sequence[int]) -> tuple[bool, float | None]:
    """(outputs agree under the rule, the margin at the first divergence or None if identical)."""
    i = first_divergence(ref, out)
    if i is None:
        return True, None
    margin = near_tie_margin(ens, prompt, ref[:i])
    return margin < NOISE_MARGIN, margin
