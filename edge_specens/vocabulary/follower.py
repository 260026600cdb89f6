"""How a follower reads the committed text: each primary token becomes zero or more of its own tokens.

A follower never re-tokenises the whole text (that is not prefix-stable: a later token can merge
with an earlier one, so rows computed for pending drafts would depend on the drafts after them).
Instead `TextFollower` consumes the committed primary tokens one at a time and appends a *chunk* of
its own tokens for each, so its token sequence only ever grows by concatenation, has a boundary at
every primary-token boundary, and is a deterministic function of the primary prefix
(shared/notes/cross-vocab.md §4.1-4.3):

    if nothing is held and the follower has the same token (entry and bytes): chunk = that token
    buf = held ⊕ bytes(primary token)
    if buf is exactly one follower token's bytes:  chunk = that token, held = ∅
    else: c = the longest prefix of buf that ends on a complete UTF-8 character, held = the rest,
          chunk = T(c): the one token that writes c, else `segment(c)`

`segment` is the follower's own tokenisation of c, accepted only when its pieces concatenate to c
exactly (`CheckedTokenizer`: llama.cpp's tokenizer, no BOS, no special parsing), else a greedy
longest-piece cover of c (`GreedySegmenter`) that skips, and counts, any byte the follower cannot
write at all. A held-back tail is at most 3 bytes (an unfinished UTF-8 sequence): while bytes are
held, the follower has not yet seen text it will see, so it **abstains** at that position (`votes` is
False) and its weight drops out of r there. A control token the primary commits goes to the follower
as its control token with the same text, or its end of turn for the primary's end of generation,
after any held bytes are flushed; otherwise the follower sees nothing of it.

With identical vocabularies the follower takes the primary's ids as they are (no text round trip).

Rollback is by primary position (`rollback(position)`): the follower keeps, per consumed primary
token, its token count and held bytes, so after a rejected draft it returns to exactly the state it
had — and its KV cache is truncated to the count this returns (its own prompt plus that many).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .table import TokenTable


def complete_prefix(buf: bytes) -> int:
    """Length of the longest prefix of `buf` that does not end inside an unfinished UTF-8 character.

    Only a tail that is a valid start of a multi-byte character still waiting for its continuation
    bytes is held back (at most 3 bytes); an invalid byte counts as complete, so nothing waits forever."""
    n = len(buf)
    for k in range(1, min(4, n) + 1):
        b = buf[n - k]
        if b & 0xC0 == 0x80:  # a continuation byte: look further back for the lead
            continue
        need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 1
        return n - k if need > k else n
    return n


class Segmenter(Protocol):
    """Follower tokens for a chunk of complete text, and how many of its bytes they had to skip."""

    def __call__(self, chunk: bytes) -> tuple[list[int], int]: ...


class GreedySegmenter:
    """Cover the chunk left to right with the longest follower piece that fits; a byte no piece starts
    with is skipped (and counted). Pure and deterministic: the fallback, and the segmenter of tests."""

    def __init__(self, table: TokenTable):
        self.by_bytes, self.longest = table.by_bytes, max(1, table.max_piece)

    def __call__(self, chunk: bytes) -> tuple[list[int], int]:
        out, skipped, i, n = [], 0, 0, len(chunk)
        while i < n:
            for m in range(min(self.longest, n - i), 0, -1):
                t = self.by_bytes.get(chunk[i : i + m])
                if t is not None:
                    out.append(t)
                    i += m
                    break
            else:
                skipped += 1
                i += 1
        return out, skipped


class CheckedTokenizer:
    """The follower's own tokenizer on the chunk, kept only if its pieces write the chunk exactly.

    `tokenize(data)` is the follower's tokenizer without BOS and without special-token parsing
    (`Member.tokenize(text, add_bos=False, special=False)` on the loaded follower). A SentencePiece
    tokenizer that adds a space prefix writes " " + chunk: its first token is dropped when it writes
    just that space; any other mismatch falls back to `GreedySegmenter`."""

    def __init__(self, table: TokenTable, tokenize: Callable[[bytes], Sequence[int]]):
        self.table, self.tokenize, self.fallback = table, tokenize, GreedySegmenter(table)

    def __call__(self, chunk: bytes) -> tuple[list[int], int]:
        pieces = self.table.pieces
        try:
            tokens = [int(t) for t in self.tokenize(chunk)]
        except (ValueError, UnicodeError):
            return self.fallback(chunk)
        parts = [pieces[t] if 0 <= t < len(pieces) else None for t in tokens]
        if tokens and None not in parts:  # a token that writes nothing cannot stand for text
            written = b"".join(p for p in parts if p is not None)
            if written == chunk:
                return tokens, 0
            if written == b" " + chunk and parts[0] == b" ":
                return tokens[1:], 0
        return self.fallback(chunk)


@dataclass(frozen=True)
class Chunk:
    """What one committed primary token did to the follower."""

    tokens: tuple[int, ...]  # follower tokens to evaluate, in order (often one, may be none)
    held: bytes  # bytes held back after it (the follower abstains at the next position if any)
    skipped: int  # bytes of this token's text the follower could not write at all

    @property
    def votes(self) -> bool:
        return not self.held


class TextFollower:
    """The follower's token sequence for the committed primary tokens (see the module docstring).

    `start` is the primary position of the first token it will consume (the primary prompt's length:
    the follower reads its own rendering of the prompt, not the primary's tokens). Positions in
    `rollback` and `length_at` are primary positions."""

    def __init__(
        self, primary: TokenTable, follower: TokenTable, segment: Segmenter | None = None, start: int = 0
    ) -> None:
        self.primary, self.follower, self.start = primary, follower, start
        self.shared = primary.texts == follower.texts and primary.attrs == follower.attrs
        self.segment: Segmenter = segment or GreedySegmenter(follower)
        self._control = _control_map(primary, follower)
        self.tokens: list[int] = []  # the follower tokens consumed so far, after its prompt
        # per consumed primary token: (len(tokens), bytes held, bytes skipped so far)
        self._marks: list[tuple[int, bytes, int]] = []

    @property
    def position(self) -> int:
        """The primary position of the next token to consume."""
        return self.start + len(self._marks)

    @property
    def held(self) -> bytes:
        return self._marks[-1][1] if self._marks else b""

    @property
    def votes(self) -> bool:
        """Whether the follower's row at `position` counts (False inside a split character)."""
        return not self.held

    @property
    def skipped(self) -> int:
        """Bytes of the committed text this follower could not write (a vocabulary without them)."""
        return self._marks[-1][2] if self._marks else 0

    def push(self, token: int) -> Chunk:
        """Consume the next committed (or drafted) primary token."""
        tokens, held, skipped = self._translate(int(token))
        self.tokens.extend(tokens)
        self._marks.append((len(self.tokens), held, self.skipped + skipped))
        return Chunk(tuple(tokens), held, skipped)

    def extend(self, tokens: Sequence[int]) -> list[Chunk]:
        return [self.push(t) for t in tokens]

    def length_at(self, position: int) -> int:
        """How many follower tokens (after its prompt) stand for the primary tokens before `position`."""
        k = position - self.start
        if not 0 <= k <= len(self._marks):
            raise IndexError(f"primary position {position} is outside {self.start}..{self.position}")
        return self._marks[k - 1][0] if k else 0

    def votes_at(self, position: int) -> bool:
        """Whether the follower votes for the token at `position` (nothing held after position - 1)."""
        k = position - self.start
        if not 0 <= k <= len(self._marks):
            raise IndexError(f"primary position {position} is outside {self.start}..{self.position}")
        return not (self._marks[k - 1][1] if k else b"")

    def rollback(self, position: int) -> int:
        """Forget the primary tokens from `position` on; returns the follower token count to keep."""
        keep = self.length_at(position)
        del self._marks[position - self.start :]
        del self.tokens[keep:]
        return keep

    # ------------------------------------------------------------------------------------------
    def _translate(self, token: int) -> tuple[list[int], bytes, int]:
        if self.shared:
            return [token], b"", 0
        held = self.held
        piece = self.primary.pieces[token] if 0 <= token < len(self.primary) else None
        if piece is None:  # a control token: flush what is held, then its counterpart if any
            out, skipped = self._write(held)
            mapped = self._control.get(token)
            return out + ([mapped] if mapped is not None else []), b"", skipped
        if not held:  # the same token (entry and bytes), at whatever id the follower has it
            same = self.follower.by_entry.get((self.primary.texts[token], piece))
            if same is not None:
                return [same], b"", 0
        buf = held + piece
        exact = self.follower.by_bytes.get(buf)
        if exact is not None:
            return [exact], b"", 0
        cut = complete_prefix(buf)
        out, skipped = self._write(buf[:cut])
        return out, buf[cut:], skipped

    def _write(self, chunk: bytes) -> tuple[list[int], int]:
        if not chunk:
            return [], 0
        exact = self.follower.by_bytes.get(chunk)
        if exact is not None:
            return [exact], 0
        return self.segment(chunk)


def _control_map(primary: TokenTable, follower: TokenTable) -> dict[int, int]:
    """Primary control token -> the follower token that stands for it: the same text, else (for an end
    of generation) the follower's end of turn."""
    out: dict[int, int] = {}
    theirs = follower.controls_by_text
    for t, piece in enumerate(primary.pieces):
        if piece is not None:
            continue
        u = theirs.get(primary.texts[t])
        if u is not None and (u in follower.eog) == (t in primary.eog):
            out[t] = u
        elif t in primary.eog and follower.eot >= 0:
            out[t] = follower.eot
    return out
