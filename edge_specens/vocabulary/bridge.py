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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import InvalidParameterError, VocabularyMismatchError
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


def plan_vocabularies(infos: Sequence, primary: int = 0, mode: str = "auto") -> VocabularyPlan:
    """Decide, from the headers, which members follow the primary (see the module docstring).

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
    p = TokenTable.from_info(infos[primary])
    bridges = {}
    for k in followers:
        table = TokenTable.from_info(infos[k])
        fw = Pushforward.build(table, p)
        rep = report(p, table, pushforward=fw)
        rep.raise_if_refused()
        bridges[k] = Bridge(p, table, fw, rep)
    return VocabularyPlan(n_vocab, primary, bridges)


def _shares(primary_info, info) -> bool:
    try:
        common_vocab_size([primary_info, info])
    except VocabularyMismatchError:
        return False
    return True
