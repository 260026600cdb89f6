"""Log-probabilities of the committed tokens under r, and OpenAI's two shapes for them.

What is reported (docs/design.md §9): r at temperature 1 after the repetition penalties, logit bias and
grammar mask, before temperature and the truncation filters (top-k, top-p, min-p): the ensemble's own
belief at each position, which does not move with the sampling knobs, as OpenAI's logprobs and
llama.cpp's default `n_probs` do not. At T = 0 that is exactly the r the greedy choice is made from, so
every strategy reports the same numbers up to float noise (§4): the exactness made visible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# OpenAI's stand-in for log 0 (a token r gives no mass: masked by a grammar, or below CD's plausibility
# cut); JSON has no -Infinity
LOG_ZERO = -9999.0


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One committed token: its log-probability under r, and r's `n` likeliest tokens (likeliest first,
    ties by token id; tokens with probability 0 are left out, so there may be fewer than asked)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()

    def to_dict(self) -> dict:
        return {"token": self.token, "logprob": self.logprob, "top_logprobs": [list(t) for t in self.top]}


def _log(p: float) -> float:
    return float(np.log(p)) if p > 0.0 else LOG_ZERO


def token_logprob(r: np.ndarray, token: int, n: int) -> TokenLogprob:
    """`token`'s entry of r, and r's n likeliest tokens (an argpartition: O(V), no full sort)."""
    top: tuple[tuple[int, float], ...] = ()
    if n > 0:
        k = min(n, r.size)
        idx = np.argpartition(-r, k - 1)[:k] if k < r.size else np.arange(r.size)
        idx = idx[np.lexsort((idx, -r[idx]))]  # likeliest first, ties by id
        top = tuple((int(i), _log(float(r[i]))) for i in idx if r[i] > 0.0)
    return TokenLogprob(int(token), _log(float(r[token])), top)


# ---------------------------------------------------------------------- OpenAI's shapes
Piece = Callable[[int], bytes]  # a token's bytes (Ensemble.piece)


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


def chat_logprobs(entries: Sequence[TokenLogprob], piece: Piece) -> dict:
    """chat.completion's `choices[].logprobs`: {"content": [{token, logprob, bytes, top_logprobs}]}."""

    def one(token: int, logprob: float) -> dict:
        b = piece(token)
        return {"token": _text(b), "logprob": logprob, "bytes": list(b)}

    content = [{**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]} for e in entries]
    return {"content": content, "refusal": None}


def llama_probabilities(entries: Sequence[TokenLogprob], piece: Piece) -> list[dict]:
    """llama-server's `completion_probabilities` (its /completion and /infill, with n_probs)."""

    def one(token: int, logprob: float) -> dict:
        b = piece(token)
        return {"id": token, "token": _text(b), "bytes": list(b), "logprob": logprob}

    return [{**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]} for e in entries]


def completion_logprobs(entries: Sequence[TokenLogprob], piece: Piece, offset: int = 0) -> dict:
    """text_completion's `choices[].logprobs`: parallel lists, `top_logprobs` as {token text: logprob}
    and `text_offset` the character offset of each token in the completion text, from `offset`."""
    tokens, offsets = [], []
    for e in entries:
        t = _text(piece(e.token))
        tokens.append(t)
        offsets.append(offset)
        offset += len(t)
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{_text(piece(t)): lp for t, lp in e.top} for e in entries],
        "text_offset": offsets,
    }
