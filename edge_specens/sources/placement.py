"""Where each member runs: the "@host:port" of its reference and the `rpc` option, together.

Both ways of placing a member are read here, once, so a member placed twice or one server given to
two members is refused before any file is read (one llama.cpp rpc-server serves one member).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from ..errors import InvalidParameterError
from ..remote.endpoint import parse_endpoint
from .reference import Reference, parse_reference


def parse_references(
    refs: Sequence[str | os.PathLike], rpc: str | Sequence[str | None] | None = None
) -> list[Reference]:
    """Every member's Reference with its endpoint (None: here), from the references and `rpc` (one
    "host:port" for all, or one value per member). Raises InvalidParameterError for a malformed
    reference or endpoint, a wrong number of rpc values, a member placed twice or a shared server."""
    given = [rpc] * len(refs) if rpc is None or isinstance(rpc, str) else list(rpc)
    if len(given) != len(refs):
        raise InvalidParameterError(f"rpc has {len(given)} values for {len(refs)} members")
    out = []
    for ref, where in zip(refs, given):
        r = parse_reference(ref)
        if r.endpoint is not None and where:
            raise InvalidParameterError(f"{r.text}: placed twice, with '@{r.endpoint}' and rpc={where!r}")
        if where:
            r = dataclasses.replace(r, endpoint=parse_endpoint(where))
        out.append(r)
    placed = [str(r.endpoint) for r in out if r.endpoint is not None]
    for e in sorted(set(placed)):
        if placed.count(e) > 1:
            raise InvalidParameterError(
                f"RPC server {e} is given to {placed.count(e)} members; one server serves one member "
                "(start another rpc-server on another port)"
            )
    return out
