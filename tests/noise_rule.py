"""SPEC §2's float-noise rule for greedy comparisons on real llama.cpp members.

Batched and single-token evaluation differ by float noise, so two exact strategies may
part ways at a near-tie of r. Outputs agree if they are identical, or if their first
divergence is at a position whose top-2 margin in r, computed from single-token
decodes, is below 5e-3.
"""

from __future__ import annotations

from edge_specens.distributions import top2_margin
from edge_specens.params import SamplingParams

MARGIN = 5e-3


def single_token_r(ens, tokens):
    """r after `tokens`, every member fed one token per llama_decode from an empty cache."""
    rows = []
    for m in ens.members:
        m.truncate(0)
        row = None
        for t in tokens:
            row = m.evaluate([t], [0])[0]
        rows.append(row[: ens.n_vocab])
        m.truncate(0)
    return ens.spec.target(rows, SamplingParams(temperature=0))


def first_divergence(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def check(ens, prompt_tokens, ref, out) -> bool:
    """True if identical; False if an excused near-tie divergence; AssertionError otherwise."""
    i = first_divergence(ref, out)
    if i is None:
        return True
    margin = top2_margin(single_token_r(ens, list(prompt_tokens) + list(ref[:i])))
    assert margin < MARGIN, f"outputs diverge at token {i} where r's top-2 margin is {margin:.3g} (not a near-tie)"
    return False
