"""Where members come from, as one step: reference → resolved file → validated header → vocabulary map →
placement → loaded member (docs/design.md §8).

`load_members` is all of loading that `Ensemble.from_paths` used to walk itself, through six modules and
back three times: the facade checks its own settings (method, weights, gamma), calls this once, and
builds the Ensemble from what it gets. In order, so that everything the arguments and the headers can
refuse is refused before any weights load:

1. `parse_references` (placement.py over reference.py): each member's Reference and where it runs;
   the primary and the vocabulary mode are checked;
2. placement: each member's llama.cpp options (`member_options`: every option one value for all, or
   threads and offload one per member), validated;
3. `resolve_all` (resolve.py): each Reference → its local file → its header checked by gguf_header;
4. `plan_vocabularies` (vocabulary/bridge.py): which members follow the primary's vocabulary, each
   follower's fixed map (its tables read from, or saved to, `bridge_cache_dir()`), one line each on
   stderr; the saved-prompt memory split over the members (prompt_cache.py);
5. the rpc-servers probed (each answers its hello with our protocol version);
6. each member loaded (`load_member`: `Member` here, `RemoteMember` on its rpc-server) and named as
   its reference names it (an Ollama blob goes by its Ollama name), each follower wrapped as a
   `FollowerMember` in the primary's token space. A failure closes the members already loaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import InvalidParameterError
from ..member import DecodeMember, Member, MemberOptions
from ..prompt_cache import check_cache_ram, default_cache_ram, split_cache_ram
from ..vocabulary.bridge import Bridge, check_primary, check_vocab_mode, plan_vocabularies
from ..vocabulary.follower_member import FollowerMember
from .placement import parse_references, per_member_options
from .resolve import resolve_all

log = logging.getLogger("edge_specens")

Stage = Callable[[str, int, int], None]


@dataclass
class LoadedMembers:
    """What `load_members` hands the facade: members ready to decode, and what loading decided."""

    members: list[DecodeMember]  # followers wrapped as FollowerMembers, in the order given
    n_vocab: int  # r's vocabulary size (the primary's, cut to what its group shares)
    primary: int
    bridges: list[Bridge]  # one per follower, in member order: its map, report and table time
    max_token_chars: int | None  # the longest vocabulary entry (Ensemble.check_text_length)
    cache_ram: float  # MiB for saved prompts, all members together


def bridge_cache_dir() -> Path:
    """Where followers' bridge tables are kept between loads: $EDGE_SPECENS_BRIDGE_CACHE, else
    `bridges/` in the model cache (fetch.cache_dir, where auto's calibration curves are kept too)."""
    env = os.environ.get("EDGE_SPECENS_BRIDGE_CACHE")
    if env:
        return Path(env).expanduser()
    from ..fetch import cache_dir

    return cache_dir() / "bridges"


def load_members(
    paths: Sequence[str | os.PathLike],
    *,
    weights: Sequence[float],
    primary: int = 0,
    vocab: str = "auto",
    method: str = "we",
    rpc: str | Sequence[str | None] | None = None,
    n_ctx: int = 4096,
    n_threads: int | Sequence[int] | None = None,
    n_threads_batch: int | Sequence[int] | None = None,
    n_gpu_layers: int | Sequence[int] = 0,
    main_gpu: int = 0,
    tensor_split: Sequence[float] | None = None,
    flash_attn: bool | None = None,
    n_batch: int | None = None,
    kv_f32: bool = False,
    mmap: bool = False,
    cache_ram: float | None = None,
    verbose: bool = False,
    stage: Stage | None = None,
) -> LoadedMembers:
    """Load every member `paths` names (the module docstring's six steps); the options are
    Ensemble.from_paths', `weights` the ensemble's (normalised), `stage` its progress callable.

    Raises what from_paths documents: InvalidParameterError, ModelLoadError / ModelNotFoundError,
    FetchError, VocabularyMismatchError, EndpointError, RpcUnavailableError."""
    tell = stage or (lambda what, done, total: None)
    n = len(paths)
    references = parse_references(paths, rpc)  # what names each member, and where it runs
    endpoints = [str(r.endpoint) if r.endpoint else None for r in references]
    primary = check_primary(primary, n, method)
    check_vocab_mode(vocab)
    options = member_options(
        n,
        n_threads=n_threads,
        n_threads_batch=n_threads_batch,
        n_gpu_layers=n_gpu_layers,
        rpc=endpoints,
        n_ctx=n_ctx,
        n_batch=n_batch,
        main_gpu=main_gpu,
        tensor_split=tuple(tensor_split) if tensor_split else None,
        flash_attn=flash_attn,
        kv_f32=kv_f32,
        mmap=mmap,
    )
    if cache_ram is not None:
        check_cache_ram(cache_ram)
    # every reference → its local file → a checked header, so a bad second file fails before the first loads
    tell("read headers", 0, n)
    sources = resolve_all(references)
    tell("read headers", n, n)
    infos = [s.info for s in sources]
    vocabs = plan_vocabularies(infos, primary, vocab, cache=bridge_cache_dir())
    if vocabs.bridges and weights[primary] == 0.0:
        raise InvalidParameterError(
            f"the primary (member {primary}) has weight 0, but r lives on its vocabulary and a follower may "
            "sit a position out; give it a weight > 0, or make the member r rests on the primary (primary=N)"
        )
    bridges = [vocabs.bridges[k] for k in sorted(vocabs.bridges)]
    for bridge in bridges:  # from the headers, before the weights load: one line each
        log.warning("%s", bridge.line())
    longest = max((len(t) for i in infos for t in (i.tokens or ()) if isinstance(t, (str, bytes))), default=0)
    _warn_past_training(infos, n_ctx)
    here = sum(i.file_size for i, e in zip(infos, endpoints) if e is None)  # weights that load into this RAM
    total_ram = default_cache_ram(here) if cache_ram is None else float(cache_ram)
    options = [replace(o, cache_ram=share) for o, share in zip(options, split_cache_ram(total_ram, infos))]
    files = [(s.path, s.name) for s in sources]
    del infos, sources  # the token lists: not kept while the weights load
    check_endpoints(endpoints)  # before any weights load: a typed error, never llama.cpp's abort
    members: list[DecodeMember] = []
    tell("load models", 0, n)
    try:
        for (path, member_name), o in zip(files, options):
            members.append(load_member(path, o, verbose=verbose))
            tell("load models", len(members), n)
            if member_name != path.name:  # an Ollama blob (sha256-...) goes by its Ollama name
                members[-1].name = members[-1].name.replace(path.name, member_name, 1)
        for k, bridge in vocabs.bridges.items():  # members with another vocabulary, seen in the primary's
            members[k] = FollowerMember(members[k], bridge, members[primary])
    except BaseException:
        for m in members:
            m.close()
        raise
    return LoadedMembers(members, vocabs.n_vocab, primary, bridges, longest or None, total_ram)


def member_options(n: int, **options) -> list[MemberOptions]:
    """Each of n members' llama.cpp options, validated: n_threads, n_threads_batch, n_gpu_layers and rpc
    may be one value for all or one per member (per_member_options), the rest are one for all."""
    placed = {k: options.pop(k) for k in ("n_threads", "n_threads_batch", "n_gpu_layers", "rpc") if k in options}
    out = [MemberOptions(**options, **place) for place in per_member_options(n, **placed)]
    for o in out:
        o.validate()
    return out


def check_endpoints(endpoints: Sequence[str | None]) -> None:
    """RPC is built in and every server answers its hello with our protocol version (EndpointError)."""
    if any(endpoints):
        from ..remote.backend import require_rpc
        from ..remote.endpoint import parse_endpoint, probe

        require_rpc()
        for e in endpoints:
            if e:
                probe(parse_endpoint(e))


def load_member(path, options: MemberOptions, verbose: bool = False) -> DecodeMember:
    """A member here (Member), or on an RPC server (RemoteMember) when options.rpc names one."""
    if options.rpc:
        from ..remote.member import RemoteMember

        return RemoteMember(path, options, verbose=verbose)
    return Member(path, options, verbose=verbose)


def _warn_past_training(infos, n_ctx: int) -> None:
    trained = min((i.context_length for i in infos if i.context_length), default=None)
    if trained and n_ctx > trained:
        log.warning(
            "warning: n_ctx %d is more than the %d tokens the model%s trained on; past them, output degrades",
            n_ctx,
            trained,
            "s were" if len(infos) > 1 else " was",
        )
