"""F_k: a follower's next-token distribution carried onto the primary's vocabulary by a fixed map.

The target r lives on the primary's vocabulary V_P (docs/design.md §2). A follower k votes with its
own distribution p_k over V_k; `Pushforward` moves it onto V_P with a map F_k: V_k → V_P ∪ {⊥} that is
fixed when the pair loads, so r stays a function of the committed prefix alone and every strategy
stays exact (any fixed map does; the choice only decides how well the follower's vote is heard):

- a follower token that writes bytes b goes to **the primary token that starts what it writes**: the
  same token if the primary has it (the same vocabulary entry writing b, at whatever id: a permuted
  vocabulary maps one to one), else the primary token that writes exactly b if there is one (the
  canonical id when several do), else the
  primary token with the *longest* piece that is a prefix of b. A split UTF-8 character needs no
  rule here: if the primary only has the character's first byte, F_k points at that byte token, the
  primary may commit it, and the follower holds the byte back and abstains until the character
  completes (`follower.TextFollower`);
- a follower control token goes to the primary control token with the same text when both are, or
  both are not, an end of generation; otherwise a follower **end-of-generation** token goes to the
  primary's end of turn (eot, else eos), so Gemma's `<end_of_turn>` votes for Qwen's `<|im_end|>`;
- everything else (padding, unused, a control token with no counterpart, bytes the primary cannot
  start) goes to ⊥, and its mass drops out (`project` renormalises).

The longest-prefix rule needs no tokenizer, so the map is a pure function of the two headers: the
header-only report (`vocabulary.report`) shows exactly what the loaded pair uses, and a cache of it is
keyed by header content alone. The design study (shared/notes/cross-vocab.md §4.1) proposed the first
token of the primary's own tokenisation of b instead; both are fixed maps, and the longest piece is
never a worse start (it is the first token of a greedy tokenisation, and it agrees with the canonical
one wherever the primary has b itself).

Carrying a distribution is one `np.bincount` over |V_k| entries (0.5 ms at 262k on 2 cores), and the
map is one int32 array, never a |V_k| × |V_P| matrix. With identical vocabularies F_k is the identity
and `carry` returns its argument untouched: bit-for-bit today's r, at no cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .table import TokenTable

UNMAPPED = -1  # ⊥
# how each follower token was mapped (Pushforward.how)
EXACT, PREFIX, ROLE, TEXT, NONE = range(5)


@dataclass(frozen=True)
class Pushforward:
    """The fixed map F_k of one follower onto the primary (see the module docstring)."""

    index: np.ndarray = field(repr=False)  # int32 [|V_k|]: primary id, or UNMAPPED
    how: np.ndarray = field(repr=False)  # int8 [|V_k|]: EXACT, PREFIX, ROLE (end of generation), TEXT, NONE
    n_primary: int
    identity: bool
    _all_mapped: bool = field(init=False, repr=False)
    _mapped: np.ndarray = field(init=False, repr=False)  # follower ids that map somewhere
    _targets: np.ndarray = field(init=False, repr=False)  # ... and where
    _image: np.ndarray = field(init=False, repr=False)  # the primary ids anything maps to, sorted

    @classmethod
    def build(cls, follower: TokenTable, primary: TokenTable) -> Pushforward:
        n_k, n_p = len(follower), len(primary)
        if follower.texts == primary.texts and follower.attrs == primary.attrs:
            return cls(np.arange(n_k, dtype=np.int32), np.full(n_k, EXACT, np.int8), n_p, True)
        index = np.full(n_k, UNMAPPED, np.int32)
        how = np.full(n_k, NONE, np.int8)
        by_bytes, longest = primary.by_bytes, primary.max_piece
        controls, same = primary.controls_by_text, primary.by_entry
        for u, piece in enumerate(follower.pieces):
            if piece is None or u in follower.eog:  # an end of generation maps by role even if it writes text
                t = controls.get(follower.texts[u], UNMAPPED) if piece is None else UNMAPPED
                if t != UNMAPPED and (t in primary.eog) == (u in follower.eog):
                    index[u], how[u] = t, TEXT
                elif u in follower.eog and primary.eot >= 0:
                    index[u], how[u] = primary.eot, ROLE
                continue
            t = same.get((follower.texts[u], piece), UNMAPPED)  # the same token: itself
            if t == UNMAPPED:
                t = by_bytes.get(piece, UNMAPPED)
            if t != UNMAPPED:
                index[u], how[u] = t, EXACT
                continue
            for n in range(min(len(piece) - 1, longest), 0, -1):
                t = by_bytes.get(piece[:n], UNMAPPED)
                if t != UNMAPPED:
                    index[u], how[u] = t, PREFIX
                    break
        return cls(index, how, n_p, False)

    def __post_init__(self) -> None:
        mapped = self.index >= 0
        object.__setattr__(self, "_all_mapped", bool(mapped.all()))
        object.__setattr__(self, "_mapped", np.flatnonzero(mapped))
        object.__setattr__(self, "_targets", self.index[mapped].astype(np.intp))
        object.__setattr__(self, "_image", np.unique(self._targets))

    def carry(self, p: np.ndarray) -> np.ndarray:
        """F_k # p: the mass p puts on each primary token (unnormalised; ⊥'s mass is dropped).

        `p` is one row over V_k, or a 2-D array of rows; the result has n_primary columns, in float64
        (sums that normalise are taken in float64, docs/design.md §2)."""
        if self.identity:
            return p
        if p.ndim == 2:
            return np.stack([self.carry(row) for row in p]) if len(p) else np.zeros((0, self.n_primary))
        if self._all_mapped:
            return np.bincount(self.index, weights=p, minlength=self.n_primary)
        return np.bincount(self._targets, weights=p[self._mapped], minlength=self.n_primary)

    def project(self, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray | None:
        """normalise(F_k # softmax(logits / temperature)) over V_P, float64; None if every token the
        follower gives mass to maps to ⊥ (it then abstains, like a follower inside a split character)."""
        z = np.asarray(logits, dtype=np.float32) / np.float32(temperature)
        z = z - z.max()
        p = np.exp(z, dtype=np.float32)
        q = self.carry(p.astype(np.float64))
        total = q.sum()
        if not total > 0:
            return None
        return q / total

    def log_project(self, logits: np.ndarray) -> np.ndarray | None:
        """log(project(logits)) as float32 pseudo-logits over V_P (-inf where nothing maps), or None
        where project is None: the row a follower votes with (vocabulary/follower_member.py). The log
        is taken only on the image of F_k (a quarter of Qwen's ids for SmolLM2): 1.0 ms a row for
        49k -> 152k instead of 2.4 ms for a log over every primary id."""
        z = np.array(logits, dtype=np.float32)
        z -= z.max()
        np.exp(z, out=z)
        q = self.carry(z)
        total = float(q.sum())
        if not total > 0:
            return None
        out = np.full(self.n_primary, -np.inf, np.float32)
        with np.errstate(divide="ignore"):
            out[self._image] = np.log(q[self._image] * (1.0 / total))
        return out

    def dropped(self, p: np.ndarray) -> float:
        """The mass of p that goes to ⊥."""
        if self._all_mapped:
            return 0.0
        return float(np.sum(p, dtype=np.float64) - np.sum(p[self._mapped], dtype=np.float64))
