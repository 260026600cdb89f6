"""Which members follow the primary's vocabulary, and each follower's fixed map (docs/design.md §2).

Decided at load from the GGUF headers alone (read with `validate_gguf(read_tokens=True)`), before any
weights load, so a pair that cannot follow costs milliseconds to refuse:

- the *primary* is the member whose vocabulary r lives on (member 0 by default; for contrastive
  decoding it must be the expert, member 0);
- `vocab="shared"`: every member must share the primary's vocabulary (the shared-vocabulary rule,
  `common_vocab_size`); a mismatch is refused as before;
- `vocab="auto"` (the default): when the shared rule holds for everyone, nothing else happens (the
  same r bit for bit, at no extra cost); otherwise the members that share the primary's vocabulary
  stay as they are and every other one becomes a *follower* with a `Bridge`;
- `vocab="bridge"`: every member but the primary is a follower, even with an identical vocabulary
  (its map is then the identity and its input the primary's ids: the same r, used by the tests).

A follower is refused (`VocabularyMismatchError`, naming both files and the first failing token) when
its mapping report says it cannot reproduce the primary's text (`MappingReport.raise_if_refused`).

Given a `cache` folder, each follower's tables are read from it when they were saved by an earlier load
of the same two files, and saved there after they are built (vocabulary/cache.py); `Bridge.line()`, the
line printed at load, says which and how long it took ("table 1.19 s" / "table cached 0.05 s").
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidParameterError, VocabularyMismatchError
from . import cache as saved
from .pushforward import Pushforward
from .report import MappingReport, report
from .shared import common_vocab_size
from .table import TokenTable

VOCAB_MODES = ("auto", "shared", "bridge")


@dataclass(frozen=True)
class Bridge:
    """One follower's fixed mapping onto the primary: both tables, F_k, and its report line."""

    primary: TokenTable = field(repr=False)
    follower: TokenTable = field(repr=False)
    pushforward: Pushforward = field(repr=False)
    report: MappingReport
    cached: bool = False  # read from the cache folder (else built from the headers)
    seconds: float = 0.0  # what building (and saving) or reading the tables took

    def line(self) -> str:
        """The load line: the mapping report's line, then how the tables came to be and how long it took."""
        return f"{self.report.line()}; table {'cached ' if self.cached else ''}{self.seconds:.2f} s"


@dataclass(frozen=True)
class VocabularyPlan:
    """What `plan_vocabularies` decided: r's vocabulary size, the primary, and a bridge per follower."""

    n_vocab: int  # rows are cut to this (the primary's vocabulary, up to padding shared with its group)
    primary: int
    bridges: dict[int, Bridge]  # member index -> its bridge (followers only; empty: everyone shares)


def check_primary(primary, n_members: int, method: str) -> int:
    """The primary's index, checked: an int in range; for contrastive decoding the expert (member 0),
    since r = softmax(l_e - mu * l_a) is built on the expert's logits."""
    if isinstance(primary, bool) or not isinstance(primary, int):
        raise InvalidParameterError(f"primary must be a member index, got {primary!r}")
    if not 0 <= primary < n_members:
        raise InvalidParameterError(f"primary {primary} is out of range: the ensemble has members 0..{n_members - 1}")
    if method == "cd" and primary != 0:
        raise InvalidParameterError(
            f"contrastive decoding builds r on the expert's vocabulary: the primary must be the expert "
            f"(member 0), got primary {primary}"
        )
    return primary


def check_vocab_mode(mode) -> str:
    if mode not in VOCAB_MODES:
        raise InvalidParameterError(f"vocab must be one of {', '.join(VOCAB_MODES)}, got {mode!r}")
    return mode


def plan_vocabularies(
    infos: Sequence, primary: int = 0, mode: str = "auto", cache: Path | None = None
) -> VocabularyPlan:
    """Decide, from the headers, which members follow the primary (see the module docstring); `cache`:
    the folder where followers' tables are kept between loads (None: built at every load).

    Raises VocabularyMismatchError for a refused pair (`shared` with different vocabularies, or a
    follower that cannot reproduce the primary's text)."""
    check_vocab_mode(mode)
    others = [k for k in range(len(infos)) if k != primary]
    ordered = [infos[primary], *(infos[k] for k in others)]  # the primary tokenizes: it goes first
    if mode == "shared":
        return VocabularyPlan(common_vocab_size(ordered), primary, {})
    if mode == "auto":
        try:
            return VocabularyPlan(common_vocab_size(ordered), primary, {})
        except VocabularyMismatchError:
            pass
        shared = [k for k in others if _shares(infos[primary], infos[k])]
    else:
        shared = []
    followers = [k for k in others if k not in shared]
    n_vocab = common_vocab_size([infos[primary], *(infos[k] for k in shared)])
    built: list[TokenTable] = []  # the primary's table, built once for every follower that is built
    bridges = {}
    for k in followers:
        bridges[k] = bridge_for(infos[primary], infos[k], cache, built)
        bridges[k].report.raise_if_refused()
    return VocabularyPlan(n_vocab, primary, bridges)


def bridge_for(primary_info, info, cache: Path | None = None, built: list | None = None) -> Bridge:
    """One follower's bridge: read from `cache` when an earlier load of the same two files saved it, else
    built from the headers (and saved there, unless the pair is refused). `built` holds the primary's
    table once one bridge has built it, for the next."""
    start = time.perf_counter()
    found = saved.read(cache, primary_info, info) if cache is not None else None
    if found is not None:
        return Bridge(*found, cached=True, seconds=time.perf_counter() - start)
    built = [] if built is None else built
    if not built:
        built.append(TokenTable.from_info(primary_info))
    p, table = built[0], TokenTable.from_info(info)
    fw = Pushforward.build(table, p)
    rep = report(p, table, pushforward=fw)
    if cache is not None and rep.refusal is None:
        saved.write(cache, primary_info, info, p, table, fw, rep)
    return Bridge(p, table, fw, rep, cached=False, seconds=time.perf_counter() - start)


def _shares(primary_info, info) -> bool:
    try:
        common_vocab_size([primary_info, info])
    except VocabularyMismatchError:
        return False
    return True
