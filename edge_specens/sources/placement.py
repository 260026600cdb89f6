"""Where each member runs: the "@host:port" of its reference and the `rpc` option, together; and
each member's threads and offload (`per_member_options`).

Both ways of placing a member are read here, once, so a member placed twice or one server given to
two members is refused before any file is read (one llama.cpp rpc-server serves one member).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

from ..errors import InvalidParameterError
from ..member import default_threads
from ..remote.endpoint import parse_endpoint
from .reference import Reference, parse_reference

log = logging.getLogger("edge_specens")


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


def per_member_options(n: int, **values) -> list[dict]:
    """Placement options (n_threads, n_threads_batch, n_gpu_layers, rpc) for each of n members: each
    value is one for all or a list of one per member. Wrong lengths and bad values raise
    InvalidParameterError; more threads than cores is allowed, with a warning."""
    out: list[dict] = [{} for _ in range(n)]
    for name, v in values.items():
        vs = list(v) if isinstance(v, (list, tuple)) else [v] * n
        if len(vs) != n:
            raise InvalidParameterError(f"{name} has {len(vs)} values for {n} members")
        for d, x in zip(out, vs):
            d[name] = x
    cores = default_threads()
    threads = [d["n_threads"] for d in out if d.get("n_threads")]
    if any(isinstance(t, int) and t > cores for t in threads):
        log.warning(
            "warning: n_threads %s is more than the %d cores of this machine; it will run slower", threads, cores
        )
    elif isinstance(values.get("n_threads"), (list, tuple)) and sum(t for t in threads if isinstance(t, int)) > cores:
        log.warning(
            "warning: n_threads %s add up to more than the %d cores; side by side, members will slow each other down",
            threads,
            cores,
        )
    return out
