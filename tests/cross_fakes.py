"""Fake members with real (tiny, hand-made) vocabularies that differ, and an independent reference r.

The primary writes GPT-2-style byte-level tokens, among them the first two bytes of 中 as a token of
their own (a split character the follower must hold back) and a control token the follower lacks
(it reaches the follower as nothing); the follower is SentencePiece-style, with `<0xNN>` byte tokens,
whole characters only, and pieces coarser and finer than the primary's. Logits are a fixed function
of each member's *own* token sequence (no llama.cpp, no float noise), so greedy outputs must be
identical and sampled ones must follow r exactly.

`reference_rows` rebuilds every row from scratch for one primary prefix: the follower's own prompt,
then its tokens for the committed text rebuilt by a fresh TextFollower, its logits on the whole of
that, softmax, carried onto the primary's vocabulary token by token in a Python loop. Nothing is
incremental there: no rollback, no batching, no cache.
"""

from __future__ import annotations

import numpy as np
from fakes import FakeMember

from edge_specens import Ensemble
from edge_specens.params import EnsembleSpec, SamplingParams
from edge_specens.vocabulary import (
    UNMAPPED,
    Bridge,
    FollowerMember,
    GreedySegmenter,
    Pushforward,
    TextFollower,
    TokenTable,
    gpt2_byte_of_char,
    report,
)
from edge_specens.vocabulary.pieces import BYTE, CONTROL, NORMAL

ZHONG = "中".encode()
E_ACUTE = "é".encode()
BYTES = sorted(set(b"ab " + ZHONG + E_ACUTE))
_CHAR_OF_BYTE = {b: c for c, b in gpt2_byte_of_char().items()}


def _bpe(piece: bytes) -> str:
    return "".join(_CHAR_OF_BYTE[b] for b in piece)


def primary_table() -> TokenTable:
    """GPT-2-like: every byte of the texts, " a", "ab", " ab", 中's first two bytes, 中, é; then
    <|im_end|> (end of generation) and <|im_start|> (a control token the follower does not have)."""
    pieces = [bytes([b]) for b in BYTES] + [b" a", b"ab", b" ab", ZHONG[:2], ZHONG, E_ACUTE]
    texts = [_bpe(p) for p in pieces] + ["<|im_end|>", "<|im_start|>"]
    types = [NORMAL] * len(pieces) + [CONTROL, CONTROL]
    meta = {"tokenizer.ggml.eos_token_id": len(pieces)}
    return TokenTable.build(texts, types, model="gpt2", name="bpe", metadata=meta)


def follower_table() -> TokenTable:
    """SentencePiece-like: <0xNN> for every byte, "a", "b", "▁", "▁a", "ba", "▁ab", "aba" (across a
    primary boundary), 中 whole; then </s> (its end of generation)."""
    texts = [f"<0x{b:02X}>" for b in BYTES] + ["a", "b", "\u2581", "\u2581a", "ba", "\u2581ab", "aba", "中", "</s>"]
    types = [BYTE] * len(BYTES) + [NORMAL] * 8 + [CONTROL]
    meta = {"tokenizer.ggml.eos_token_id": len(texts) - 1}
    return TokenTable.build(texts, types, model="llama", name="spm", metadata=meta)


class TextFake(FakeMember):
    """A FakeMember that writes text through a TokenTable: its tokenizer is a greedy cover of the
    bytes, its end-of-generation tokens the table's (made unlikely by eos_bias)."""

    def __init__(self, table: TokenTable, seed: int, n_params: int, eos_bias: float = -2.0, n_ctx: int = 4096):
        super().__init__(seed, len(table), 1.5, n_ctx=n_ctx, n_params=n_params, eos_bias=0.0)
        self.table = table
        self.name = f"{table.name}{seed}"
        self._eog_bias = eos_bias
        self._cover = GreedySegmenter(table)

    def logits(self, prefix) -> np.ndarray:
        out = super().logits(prefix)
        for e in self.table.eog:
            out[e] += self._eog_bias
        return out

    def tokenize(self, text, add_bos=None, special=True):
        return self._cover(text.encode("utf-8"))[0]

    def piece(self, token: int) -> bytes:
        return self.table.pieces[token] or b""

    def is_eog(self, token: int) -> bool:
        return token in self.table.eog


def bridge_of(follower: TokenTable, primary: TokenTable, pushforward: Pushforward | None = None) -> Bridge:
    fw = pushforward or Pushforward.build(follower, primary)
    return Bridge(primary, follower, fw, report(primary, follower, pushforward=fw))


def cross_ensemble(
    method: str = "we",
    weights=None,
    mu: float = 0.5,
    seeds=(1, 2),
    follower_ctx: int = 4096,
    pushforward: Pushforward | None = None,
) -> Ensemble:
    """[primary (BPE-like, the larger), follower (SPM-like, the smaller: the default proposer)]."""
    a, b = primary_table(), follower_table()
    primary = TextFake(a, seeds[0], n_params=2000)
    follower = TextFake(b, seeds[1], n_params=1000, n_ctx=follower_ctx)
    members = [primary, FollowerMember(follower, bridge_of(b, a, pushforward), primary)]
    return Ensemble(members, EnsembleSpec.build(2, method, weights, mu), len(a), primary=0)


def reference_rows(ens: Ensemble, prompt_text: str, prefix: list[int]) -> list[np.ndarray | None]:
    """Every member's row after prompt + prefix, from scratch (see the module docstring)."""
    primary, wrapped = ens.members[0], ens.members[1]
    follower, bridge = wrapped.inner, wrapped.bridge
    prompt = primary.tokenize(prompt_text)
    own = follower.tokenize(prompt_text)
    rows: list[np.ndarray | None] = [primary.logits(prompt + prefix).astype(np.float64)]
    f = TextFollower(bridge.primary, bridge.follower, GreedySegmenter(bridge.follower), start=len(prompt))
    chunks = f.extend(prefix)
    votes = not chunks or (bool(chunks[-1].tokens) and chunks[-1].votes)
    if votes and len(own) + len(f.tokens) <= follower.n_ctx:
        z = follower.logits(own + f.tokens).astype(np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        q = np.zeros(len(bridge.primary))
        for u, t in enumerate(reference_map(bridge)):
            if t != UNMAPPED:
                q[t] += p[u]
        with np.errstate(divide="ignore"):
            rows.append(np.log(q / q.sum()) if q.sum() > 0 else None)
    else:
        rows.append(None)
    return rows


def reference_map(bridge: Bridge) -> list[int]:
    """F_k as the tests define it, apart from Pushforward: the same token, else the primary token that
    writes the same bytes, else the longest primary piece that starts them; end of generation by role."""
    a, b = bridge.primary, bridge.follower
    out = []
    for u, piece in enumerate(b.pieces):
        if u in b.eog:
            out.append(a.eot)
        elif not piece:
            out.append(UNMAPPED)
        else:
            same = [t for t in range(len(a)) if a.texts[t] == b.texts[u] and a.pieces[t] == piece]
            starts = [t for t in range(len(a)) if a.pieces[t] and piece.startswith(a.pieces[t])]
            exact = [t for t in starts if a.pieces[t] == piece]
            if same:
                out.append(same[0])
            elif exact:
                out.append(a.by_bytes[piece])
            elif starts:
                out.append(max(starts, key=lambda t: (len(a.pieces[t]), -t)))
            else:
                out.append(UNMAPPED)
    return out


def reference_r(ens: Ensemble, prompt_text: str, prefix: list[int], sampling: SamplingParams) -> np.ndarray:
    context = ens.tokenize(prompt_text) + prefix
    return ens.spec.target(reference_rows(ens, prompt_text, prefix), sampling, context)


def exact_two_tokens(ens: Ensemble, prompt_text: str, sampling: SamplingParams) -> dict:
    """P(x1, x2) under the reference r; (x1, -1) when x1 ends the generation."""
    out = {}
    r1 = reference_r(ens, prompt_text, [], sampling)
    for x1 in np.nonzero(r1)[0]:
        x1 = int(x1)
        if ens.is_eog(x1):
            out[(x1, -1)] = r1[x1]
            continue
        r2 = reference_r(ens, prompt_text, [x1], sampling)
        for x2 in np.nonzero(r2)[0]:
            out[(x1, int(x2))] = r1[x1] * r2[x2]
    return out
