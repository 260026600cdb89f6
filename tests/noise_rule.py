"""docs/design.md §4's float-noise rule as a test assertion (the rule itself lives in edge_specens.exactness)."""

from __future__ import annotations

from edge_specens.exactness import agree


def check(ens, prompt_tokens, ref, out) -> bool:
    """True if identical; False if an excused near-tie divergence; AssertionError otherwise."""
    ok, margin = agree(ens, list(prompt_tokens), list(ref), list(out))
    assert ok, f"outputs diverge where r's top-2 margin is {margin:.3g} (not a near-tie)"
    return margin is None
