"""How well a follower's vocabulary maps onto the primary's, from the two headers alone.

`report(primary, follower)` builds the pair's fixed map (`Pushforward`) and says, in numbers and in
one line, what a user needs before loading any weights (`edge-specens models info A --against B`):
how many of the follower's tokens are primary tokens (the rest map by their first piece), how many
primary tokens the follower writes as one token, which bytes it cannot write at all, where its
end-of-generation tokens go (`<end_of_turn> → <|im_end|>`), and, when the pair cannot reproduce
the primary's text, why (`refusal`; `raise_if_refused` turns it into VocabularyMismatchError naming
both files and the first failing token).

A pair is refused when
- either tokenizer has no byte table here (rwkv, plamo2, none), or the follower's tokenizer rewrites
  text (bert's WordPiece, t5's Unigram normalise it), so it could not follow the primary's bytes;
- more than MAX_UNWRITABLE (0.1 %) of the primary's text tokens cannot be written by the follower at
  all: it lacks bytes they contain (a vocabulary without byte fallback);
- either side has no end-of-generation token, so the follower could never vote to stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import VocabularyMismatchError
from .pieces import BPE_MODELS, NORMALISING_MODELS, SPM_MODELS
from .pushforward import EXACT, NONE, PREFIX, Pushforward
from .table import TokenTable

MAX_UNWRITABLE = 0.001  # share of the primary's text tokens a follower may be unable to write


@dataclass(frozen=True)
class MappingReport:
    """The mapping of one follower onto the primary (see the module docstring)."""

    follower: str
    primary: str
    follower_file: str
    primary_file: str
    identical: bool  # the same vocabulary, up to padding rows: the shared rule applies, no mapping
    follower_text_tokens: int  # follower tokens that write text
    exact: int  # ... that are primary tokens (same bytes)
    by_prefix: int  # ... that map to the primary token with their longest leading piece
    unmapped: int  # ... that map nowhere (⊥): the primary cannot start their text
    primary_text_tokens: int
    primary_as_one: int  # primary text tokens that are one follower token
    unwritable: int  # primary text tokens the follower cannot write at all
    first_unwritable: str | None
    missing_bytes: tuple[int, ...]  # byte values the follower has no single-byte token for
    eog_map: tuple[tuple[str, str], ...]  # follower end-of-generation text -> primary text
    refusal: str | None
    padding_rows: int = 0  # rows one side has beyond the other, all padding (when identical)

    @property
    def exact_share(self) -> float:
        return self.exact / self.follower_text_tokens if self.follower_text_tokens else 0.0

    @property
    def primary_as_one_share(self) -> float:
        return self.primary_as_one / self.primary_text_tokens if self.primary_text_tokens else 0.0

    def line(self) -> str:
        """One line, as the load report prints it per follower."""
        head = f"{self.follower} → primary {self.primary}: "
        if self.identical:
            pad = f", up to {self.padding_rows:,} padding rows" if self.padding_rows else ""
            return head + f"the same vocabulary{pad} (no mapping)"
        parts = [
            f"{100 * self.exact_share:.1f} % of its tokens are primary tokens"
            + (", the rest map by first piece" if self.exact < self.follower_text_tokens else "")
            + (f" ({self.unmapped:,} nowhere)" if self.unmapped else ""),
            f"{100 * self.primary_as_one_share:.1f} % of primary tokens are one {self.follower} token",
        ]
        if self.missing_bytes:
            parts.append(f"{len(self.missing_bytes)} bytes it cannot write ({_bytes_list(self.missing_bytes)})")
        eog = ", ".join(f"{a} → {b}" for a, b in self.eog_map)
        parts.append(eog if eog else "no end-of-generation mapping")
        text = head + "; ".join(parts)
        return text + (f"; refused: {self.refusal}" if self.refusal else "")

    def raise_if_refused(self) -> None:
        if self.refusal:
            raise VocabularyMismatchError(f"{self.follower_file} cannot follow {self.primary_file}: {self.refusal}")


def report(primary, follower, pushforward: Pushforward | None = None) -> MappingReport:
    """The mapping report of `follower` onto `primary`: GGUFInfo (read with read_tokens=True) or TokenTable.
    `pushforward`: the pair's map when the caller has built it already (the load path), else built here."""
    p, k = _table(primary), _table(follower)
    refusal = _unsupported(p, "primary") or _unsupported(k, "follower")
    if refusal is None and k.model in NORMALISING_MODELS:
        refusal = f"its tokenizer ({k.model}) normalises text, so it cannot follow the primary's bytes"
    if refusal is not None:
        return _refused(p, k, refusal)
    fw = pushforward if pushforward is not None else Pushforward.build(k, p)
    padding = _padding_rows(p, k)
    k_text = np.array([piece is not None and piece != b"" for piece in k.pieces])
    p_pieces = [piece for piece in p.pieces if piece]
    as_one = sum(1 for piece in p_pieces if piece in k.by_bytes)
    missing = tuple(b for b in range(256) if b not in k.byte_tokens)
    unwritable = _unwritable(p_pieces, k, set(missing))
    eog_map = tuple(
        (k.text(u), p.text(int(fw.index[u]))) for u in sorted(k.eog) if fw.index[u] >= 0 and fw.how[u] != NONE
    )
    if not p.eog or p.eot < 0:
        refusal = f"{p.file} has no end-of-generation token"
    elif not k.eog:
        refusal = "it has no end-of-generation token, so it could never vote to stop"
    elif not any(int(fw.index[u]) in p.eog for u in k.eog):
        refusal = "none of its end-of-generation tokens maps to one of the primary's"
    elif p_pieces and len(unwritable) > MAX_UNWRITABLE * len(p_pieces):
        refusal = (
            f"it cannot write {len(unwritable):,} of the primary's {len(p_pieces):,} text tokens "
            f"(more than {100 * MAX_UNWRITABLE:g} %; the first is {unwritable[0]!r})"
        )
    follower_name, primary_name = _names(p, k)
    return MappingReport(
        follower=follower_name,
        primary=primary_name,
        follower_file=k.file,
        primary_file=p.file,
        identical=fw.identity or padding is not None,
        padding_rows=padding or 0,
        follower_text_tokens=int(k_text.sum()),
        exact=int(np.sum((fw.how == EXACT) & k_text)),
        by_prefix=int(np.sum(fw.how == PREFIX)),
        unmapped=int(np.sum((fw.how == NONE) & k_text)),
        primary_text_tokens=len(p_pieces),
        primary_as_one=as_one,
        unwritable=len(unwritable),
        first_unwritable=repr(unwritable[0]) if unwritable else None,
        missing_bytes=missing,
        eog_map=eog_map,
        refusal=refusal,
    )


def _names(p: TokenTable, k: TokenTable) -> tuple[str, str]:
    """(follower, primary) as the line names them: the models' names, or their files' when they clash."""
    return (k.name, p.name) if k.name != p.name else (k.file, p.file)


def _padding_rows(p: TokenTable, k: TokenTable) -> int | None:
    """How many rows the longer vocabulary has beyond the shorter, when they share a vocabulary under the
    shared rule (the same text below the smaller size, padding beyond it); None when they do not."""
    n = min(len(p), len(k))
    if p.texts[:n] != k.texts[:n]:
        return None
    longer = p if len(p) > n else k
    if not all(longer.is_padding(i) for i in range(n, len(longer))):
        return None
    return len(longer) - n


def _table(x) -> TokenTable:
    return x if isinstance(x, TokenTable) else TokenTable.from_info(x)


def _unsupported(t: TokenTable, side: str) -> str | None:
    if t.model in SPM_MODELS or t.model in BPE_MODELS or t.model in NORMALISING_MODELS:
        return None
    return f"the {side} {t.file} has tokenizer model {t.model or 'none'!r}, which has no byte table here"


def _unwritable(pieces: Sequence[bytes], k: TokenTable, missing: set[int]) -> list[bytes]:
    """Primary pieces the follower cannot write as any sequence of its tokens (only pieces holding a byte
    the follower has no single-byte token for can fail; those are checked exactly)."""
    if not missing:
        return []
    by_bytes, longest = k.by_bytes, k.max_piece
    out = []
    for piece in pieces:
        if not missing.intersection(piece):
            continue
        ok = [True] + [False] * len(piece)  # ok[i]: piece[:i] can be written
        for i in range(len(piece)):
            if ok[i]:
                for m in range(1, min(longest, len(piece) - i) + 1):
                    if piece[i : i + m] in by_bytes:
                        ok[i + m] = True
        if not ok[-1]:
            out.append(piece)
    return out


def _refused(p: TokenTable, k: TokenTable, why: str) -> MappingReport:
    follower_name, primary_name = _names(p, k)
    return MappingReport(
        follower=follower_name,
        primary=primary_name,
        follower_file=k.file,
        primary_file=p.file,
        identical=False,
        follower_text_tokens=0,
        exact=0,
        by_prefix=0,
        unmapped=0,
        primary_text_tokens=0,
        primary_as_one=0,
        unwritable=0,
        first_unwritable=None,
        missing_bytes=(),
        eog_map=(),
        refusal=why,
    )


def _bytes_list(values: Sequence[int], limit: int = 8) -> str:
    shown = " ".join(f"{b:02X}" for b in values[:limit])
    return shown + (f" … +{len(values) - limit}" if len(values) > limit else "")
