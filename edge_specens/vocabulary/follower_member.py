"""A follower seen in the primary's token space: a `DecodeMember` the decode loop needs no special case for.

The decode state (decode/state.py) keeps every member's rows by *primary* position and rolls members
back to primary lengths. `FollowerMember` wraps a loaded member whose vocabulary differs and keeps
that contract (docs/design.md §2, "Members with different vocabularies"):

- **Its own prompt.** The follower reads the prompt in its own tokens: the facade binds one to each
  primary prompt (`bind_prompt`: the same text through its own tokenizer, or the conversation in its own
  chat template); an unbound primary prompt (token ids) is re-encoded from its text (`reencode`).
  Primary prompt positions stand for its own prompt, right-aligned: after `prefill` it holds all of its
  own prompt but the last token, exactly as the primary holds its prompt, and evaluating the primary
  prompt's last token evaluates its own last prompt token.
- **Committed and drafted tokens** go through a `TextFollower` (its tokens for each primary token, a
  deterministic, prefix-stable function of the primary prefix), so its real KV cache always holds
  len(own prompt) + follower.length_at(position) tokens. `evaluate_rows` pushes every new primary
  token, feeds all their pieces to the real member in **one** evaluation with rows at the pieces' ends,
  and `truncate(n)` rolls both back to primary position n.
- **Rows** are pseudo-logits over V_P: log(F_k # softmax(l_k)) (−inf where F_k carries no mass), so
  softmax(row / T) is the pushforward tempered in the primary's space, like any member's logits, and
  `spec.target`, `proposal` and the filters need no change. With an identity map the raw row is
  returned as it is (bit for bit the shared vocabulary's r).
- **Abstention** (a `None` row) at a position whose token it has not finished reading: bytes of a split
  UTF-8 character held back, or a primary token that reached it as nothing (a control token it has no
  counterpart for, bytes it cannot write): its state did not change, and a vote computed before the
  token would ignore it. Also past its own context (its pieces can outgrow the primary's count). Each
  is a function of the primary prefix, so r stays one, and every strategy stays exact.

`tokenize`, `piece` and `is_eog` answer in the primary's space (the committed tokens are primary tokens);
everything else that describes the model (path, options, metadata, threads, device, stats) is the
wrapped member's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import ContextOverflowError, InvalidParameterError, VocabularyMismatchError
from .bridge import Bridge
from .follower import CheckedTokenizer, TextFollower

_BOUND_PROMPTS = 8  # primary prompts remembered with the follower's own rendering of them


class FollowerMember:
    """A loaded member whose vocabulary differs from the primary's, in the primary's token space."""

    def __init__(self, inner, bridge: Bridge, primary_member) -> None:
        self.inner = inner
        self.bridge = bridge
        self._primary = primary_member  # tokenize / piece / is_eog in the primary's space
        self.name = inner.name
        self.n_vocab = bridge.pushforward.n_primary
        # what the decode loop reads, as the wrapped member has it (fixed at load; stats is its object)
        self.stats, self.can_rollback = inner.stats, inner.can_rollback
        self.n_ctx, self.n_batch = inner.n_ctx, inner.n_batch
        if inner.n_vocab != len(bridge.follower):
            raise VocabularyMismatchError(
                f"{inner.name}: llama.cpp loaded {inner.n_vocab} tokens, its header lists {len(bridge.follower)}"
            )
        self.tokens: list[int] = []  # primary tokens it stands at (the primary prompt but its last, then more)
        self._prompt: list[int] = []  # the primary prompt of this generation
        self._own: list[int] = []  # ... in the follower's own tokens
        self._follower: TextFollower | None = None  # None until prefill
        self._bound: OrderedDict[tuple[int, ...], list[int]] = OrderedDict()
        self._segment = CheckedTokenizer(bridge.follower, self._tokenize_piece)
        self.abstained = 0  # positions it sat out (rows it returned as None), for the tests and stats

    # ------------------------------------------------------------------ the wrapped member
    def __getattr__(self, name: str):
        if name == "inner":  # not set yet (during __init__ or unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def n_params(self) -> int:
        return self.inner.n_params

    @property
    def threads(self) -> int:
        return self.inner.threads

    @property
    def device(self) -> str:
        return self.inner.device

    def pin_threads(self, n: int | None) -> None:
        self.inner.pin_threads(n)

    def close(self) -> None:
        self.inner.close()

    # ------------------------------------------------------------------ the primary's token space
    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = True) -> list[int]:
        return self._primary.tokenize(text, add_bos=add_bos, special=special)

    def piece(self, token: int) -> bytes:
        return self._primary.piece(token)

    def is_eog(self, token: int) -> bool:
        return self._primary.is_eog(token)

    # ------------------------------------------------------------------ prompts
    def bind_prompt(self, prompt: Sequence[int], own: Sequence[int]) -> None:
        """The follower reads `own` (its own tokens) wherever the primary reads `prompt`."""
        own = list(own)
        if not own:
            raise InvalidParameterError(f"{self.name}: the prompt is empty in its own tokens")
        if len(own) >= self.inner.n_ctx:
            raise ContextOverflowError(
                f"the prompt has {len(own)} tokens for {self.name} but its context holds {self.inner.n_ctx}; "
                "shorten it or raise n_ctx (-c)"
            )
        key = tuple(int(t) for t in prompt)
        self._bound[key] = own
        self._bound.move_to_end(key)
        while len(self._bound) > _BOUND_PROMPTS:
            self._bound.popitem(last=False)

    def own_text(self, text: str) -> list[int]:
        """A text prompt in the follower's own tokens: its tokenizer, its BOS rule, special tokens parsed
        (as the primary parses them)."""
        return self.inner.tokenize(text)

    def reencode(self, prompt: Sequence[int]) -> list[int]:
        """A primary prompt given as token ids, in the follower's own tokens: the text it writes (control
        tokens as their text, the primary's own BOS dropped: the follower adds its own), tokenized the
        way a text prompt is."""
        p = self.bridge.primary
        ids = [int(t) for t in prompt]
        if ids and p.add_bos and p.bos >= 0 and ids[0] == p.bos:
            ids = ids[1:]
        parts, after_special = [], True
        for t in ids:
            piece = p.pieces[t]
            if piece is None:
                parts.append(_control_text(p, t))
                after_special = True
                continue
            if after_special and p.add_space_prefix and piece.startswith(b" "):
                piece = piece[1:]  # the space its tokenizer put in front of the text (SentencePiece)
            parts.append(piece)
            after_special = False
        own = self.own_text(b"".join(parts).decode("utf-8", errors="replace"))
        k = self.bridge.follower
        if not own and k.bos >= 0:  # nothing but a BOS on the primary's side
            own = [k.bos]
        return own

    def own_prompt(self, prompt: Sequence[int]) -> list[int]:
        bound = self._bound.get(tuple(int(t) for t in prompt))
        return list(bound) if bound is not None else self.reencode(prompt)

    # ------------------------------------------------------------------ the cache
    def prefill(self, prompt: Sequence[int], should_stop: Callable[[], bool] | None = None) -> int:
        """Hold the follower's own prompt but its last token (as the primary holds its own); returns the
        reused tokens in primary tokens (the follower's count, scaled)."""
        own = self.own_prompt(prompt)
        self.bind_prompt(prompt, own)  # checks it fits
        self._follower = None
        reused = self.inner.prefill(own, should_stop)
        self._begin(prompt, own)
        return _scaled(reused, len(own), len(prompt))

    def reuse_prefix(self, sequence: Sequence[int]) -> int:
        """Keep what the real member can reuse of its own rendering of `sequence`; the follower then
        stands nowhere until the next prefill (the facade calls this only for a prompt that does not fit)."""
        own = self.own_prompt(sequence)
        reused = self.inner.reuse_prefix(own)
        self._follower = None
        self.tokens = []
        return _scaled(reused, len(own), len(sequence))

    def truncate(self, n: int) -> None:
        """Roll back to primary position n (the real cache to its own length there)."""
        if self._follower is None or n >= len(self.tokens):
            return
        self._follower.rollback(max(n, len(self._prompt)))
        del self.tokens[n:]
        self.inner.truncate(self._real_length(n))

    def evaluate_rows(self, tokens: Sequence[int], want: Sequence[int]) -> list[np.ndarray | None]:
        """Append primary `tokens`; the rows at the indices `want`, over V_P (None: it abstains there)."""
        f = self._follower
        if f is None:
            raise RuntimeError(f"{self.name}: evaluate before prefill (a bug in edge_specens)")
        start, m = len(self.tokens), len(self._prompt)
        base = self._real_length(start)
        real: list[int] = []
        ends: list[int] = []  # per primary token: index in `real` of the row after it, or -1 (abstains)
        for i, t in enumerate(tokens):
            j = start + i
            if j < m:  # a prompt position: it stands for the follower's own prompt, right-aligned
                if int(t) != self._prompt[j]:
                    raise RuntimeError(f"{self.name}: prompt position {j} holds another token (a bug in edge_specens)")
                real.extend(self._own[self._real_length(j) : self._real_length(j + 1)])
                ends.append(len(real) - 1 if j == m - 1 else -1)
            else:
                chunk = f.push(int(t))
                real.extend(chunk.tokens)
                ends.append(len(real) - 1 if chunk.tokens and chunk.votes else -1)
        self.tokens.extend(int(t) for t in tokens)
        # past its own context it stops reading and abstains (a function of the prefix, like the rest)
        fit = min(len(real), max(0, self.inner.n_ctx - base)) if len(self.inner.tokens) == base else 0
        ask = sorted({ends[i] for i in want if 0 <= ends[i] < fit})
        rows = dict(zip(ask, self.inner.evaluate_rows(real[:fit], ask))) if fit else {}
        out = [self._vote(rows.get(ends[i])) for i in want]
        self.abstained += sum(1 for r in out if r is None)
        return out

    def evaluate(self, tokens: Sequence[int], want: Sequence[int]) -> list[np.ndarray | None]:
        """evaluate_rows, for the tools that read rows directly (exactness.py)."""
        return self.evaluate_rows(tokens, want)

    # ------------------------------------------------------------------ internals
    def _begin(self, prompt: Sequence[int], own: Sequence[int]) -> None:
        self._prompt, self._own = [int(t) for t in prompt], list(own)
        self.tokens = self._prompt[:-1]
        self._follower = TextFollower(self.bridge.primary, self.bridge.follower, self._segment, start=len(prompt))

    def _real_length(self, j: int) -> int:
        """How many of its own tokens the follower holds when it stands at primary position j."""
        m, own = len(self._prompt), len(self._own)
        if j >= m:
            assert self._follower is not None
            return own + self._follower.length_at(j)
        return max(0, own - (m - j))

    def _vote(self, row: np.ndarray | None) -> np.ndarray | None:
        """The follower's row carried onto V_P as pseudo-logits (None: no vote)."""
        if row is None:
            return None
        fw = self.bridge.pushforward
        return row if fw.identity else fw.log_project(row)

    def _tokenize_piece(self, data: bytes) -> list[int]:
        """The follower's own tokenizer on a chunk of committed text: no BOS, no special tokens."""
        return self.inner.tokenize(data.decode("utf-8"), add_bos=False, special=False)

    def __repr__(self) -> str:
        return f"FollowerMember({self.name!r} → {self.bridge.report.primary!r})"


def _control_text(table, token: int) -> bytes:
    """What a token that writes nothing stands for in a re-encoded prompt: a control token's text."""
    if 0 <= token < len(table) and table.controls_by_text.get(table.texts[token]) == token:
        return table.texts[token]
    return b""


def _scaled(reused: int, own: int, primary: int) -> int:
    """Reused own tokens as primary tokens (statistics only: the two prompts differ in length)."""
    if own <= 1:
        return 0
    return min(primary - 1, reused * max(primary - 1, 0) // (own - 1))


def is_follower(member) -> bool:
    return isinstance(member, FollowerMember)
