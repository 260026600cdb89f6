"""One member's vocabulary as the bridge needs it: what every token writes, and which tokens have roles.

A `TokenTable` is built from a GGUF header (`TokenTable.from_info`, no weights) or from plain lists
(`TokenTable.build`, for synthetic vocabularies in tests). It holds, per token id, the bytes it writes
(`pieces`, None for tokens that write nothing) and its attributes as llama.cpp loads them; the
end-of-generation set and the end-of-turn token as llama.cpp derives them from the header; and
`by_bytes`, the one id that stands for each byte string (when several tokens write the same bytes,
e.g. SentencePiece's `▁` and `<0x20>`, the one a tokenizer produces: a normal or user-defined token
before a byte token, then the lowest id). Everything is a function of the header, so two loads of one
file give equal tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .pieces import (
    A_BYTE,
    A_CONTROL,
    A_NORMAL,
    A_UNKNOWN,
    A_UNUSED,
    A_USER_DEFINED,
    EOG_TEXTS,
    EOT_TEXTS,
    NAMED_PREFIXES,
    ROLE_TEXTS,
    loaded_attrs,
    token_pieces,
)

# Special ids llama.cpp assumes when the header names none (llama-vocab.cpp, per tokenizer model)
_DEFAULT_IDS = {"llama": {"bos": 1, "eos": 2, "unk": 0}, "gpt2": {"bos": 11, "eos": 11}, "t5": {"eos": 1, "unk": 2}}
_EOG_ROLES = ("eos", "eot", "eom", "fim_pad", "fim_rep", "fim_sep")
# Control tokens that are padding by name: what converters fill a vocabulary's tail with
_PADDING_NAME = re.compile(
    rb"\[PAD\d*\]|<\|?pad(_token)?\|?>|<\|PAD_TOKEN\|>|<pad_\d+>|<\|reserved_special_token_\d+\|>|<unused\d+>"
    rb"|<\|unused_?\d*\|>|<\|dummy_?\d+\|>|<\|extra_?\d+\|>",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class TokenTable:
    """What each token of one vocabulary writes, and its roles (see the module docstring)."""

    name: str
    model: str  # tokenizer.ggml.model
    texts: tuple[bytes, ...] = field(repr=False)  # raw vocabulary entries
    attrs: tuple[int, ...] = field(repr=False)  # llama.cpp's loaded token attributes (pieces.loaded_attrs)
    file: str = ""  # the file's name, for messages
    eog: frozenset[int] = frozenset()
    eot: int = -1  # end of turn: the token a chat reply ends with (llama.cpp's eot, else eos)
    bos: int = -1
    add_bos: bool = False
    add_space_prefix: bool = False
    pre: str = ""
    # Derived data read back from the cache (vocabulary/cache.py): "pieces" (a callable that makes them)
    # and, per index, the ids it maps to in its order ("by_bytes", "by_entry", "controls_by_text"). The
    # properties below rebuild from these instead of deriving, key for key; empty for a table just built.
    restored: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        texts: Sequence[bytes | str],
        types: Sequence[int] | None = None,
        *,
        model: str = "gpt2",
        pre: str = "",
        name: str = "vocabulary",
        file: str = "",
        metadata: dict | None = None,
        eog: Sequence[int] | None = None,
    ) -> TokenTable:
        """A table from a token list (+ types, GGUF TokenType numbers) and header metadata.

        `eog` overrides the end-of-generation set (the loaded model's `llama_vocab_is_eog` is the
        final word; by default it is derived from the header the way llama.cpp derives it)."""
        meta = dict(metadata or {})
        raw = _as_bytes(texts)
        attrs = tuple(loaded_attrs(raw, types, meta))
        ids = _special_ids(raw, model, meta)
        if eog is None:
            found = {ids[r] for r in _EOG_ROLES if ids.get(r, -1) >= 0}
            found |= {
                i
                for i, t in enumerate(raw)
                if t.startswith(NAMED_PREFIXES) and t.decode("utf-8", "replace") in EOG_TEXTS
            }
            eog_set = frozenset(found)
        else:
            eog_set = frozenset(int(i) for i in eog)
        eot = ids.get("eot", -1)
        if eot < 0:
            eot = ids.get("eos", -1)
        if eot not in eog_set:
            eot = -1  # an end of turn that does not end generation is none
        return cls(
            name=name,
            model=model,
            texts=raw,
            attrs=attrs,
            file=file or name,
            eog=eog_set,
            eot=eot,
            bos=ids.get("bos", -1),
            add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", model == "llama")),
            add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", model == "llama")),
            pre=pre,
        )

    @classmethod
    def from_info(cls, info) -> TokenTable:
        """The table of a GGUF file read with `validate_gguf(path, read_tokens=True)`."""
        fields = header_fields(info)
        return cls.build(fields.pop("texts"), info.token_types, metadata=info.metadata, **fields)

    def __len__(self) -> int:
        return len(self.texts)

    @cached_property
    def pieces(self) -> tuple[bytes | None, ...]:
        """Per id, the bytes it writes (None: nothing, ever); see pieces.token_pieces."""
        if "pieces" in self.restored:
            return self.restored["pieces"]()
        return tuple(token_pieces(self.texts, self.attrs, self.model, self.pre))

    def text(self, token: int) -> str:
        """The vocabulary entry, for messages."""
        return self.texts[token].decode("utf-8", errors="replace")

    def is_padding(self, token: int) -> bool:
        """A row no text needs: an unused token, or a control token whose name says it is padding
        (`[PAD7]`, `<|PAD_TOKEN|>`, `<|reserved_special_token_3|>`, `<unused5>`), and no role. A member
        that never tokenizes text may carry a tail of such rows (docs/design.md §2)."""
        attr = self.attrs[token]
        if token in self.eog or token == self.bos or attr & (A_NORMAL | A_BYTE | A_USER_DEFINED | A_UNKNOWN):
            return False
        return bool(attr & A_UNUSED) or (bool(attr & A_CONTROL) and _is_padding_name(self.texts[token]))

    def can_produce(self, token: int) -> bool:
        """Whether this vocabulary's tokenizer can put `token` into a prompt: text tokens by merging,
        control, user-defined and unknown tokens by llama.cpp's special-token pass (a prompt holding
        the text `<|PAD_TOKEN|>` becomes that control token). Only a bare unused token never appears."""
        return self.attrs[token] != A_UNUSED

    @cached_property
    def by_bytes(self) -> dict[bytes, int]:
        """Byte string -> the id that stands for it (see the module docstring); empty pieces excluded."""
        if "by_bytes" in self.restored:
            ids, pieces = self.restored["by_bytes"], self.pieces
            return dict(zip(map(pieces.__getitem__, ids), ids))  # type: ignore[arg-type]  # never None: checked
        best: dict[bytes, int] = {}
        for i, p in enumerate(self.pieces):
            if not p:
                continue
            j = best.get(p)
            if j is None or (self.attrs[j] & A_BYTE and not self.attrs[i] & A_BYTE):
                best[p] = i
        return best

    @cached_property
    def by_entry(self) -> dict[tuple[bytes, bytes], int]:
        """(vocabulary entry, the bytes it writes) -> id, for tokens that write text. The same token in
        another vocabulary (the same entry writing the same bytes: a permuted or extended vocabulary,
        a fine-tune with other special tokens) is found here at whatever id it has, so the bridge maps
        it to itself even where several tokens write its bytes (SentencePiece's `a` and `<0x61>`)."""
        if "by_entry" in self.restored:
            ids, texts, pieces = self.restored["by_entry"], self.texts, self.pieces
            return dict(zip(zip(map(texts.__getitem__, ids), map(pieces.__getitem__, ids)), ids))  # type: ignore[arg-type]
        out: dict[tuple[bytes, bytes], int] = {}
        for i, (t, p) in enumerate(zip(self.texts, self.pieces)):
            if p:
                out.setdefault((t, p), i)
        return out

    @cached_property
    def controls_by_text(self) -> dict[bytes, int]:
        """Raw text -> id for tokens that write nothing but may have a role (control, unknown)."""
        if "controls_by_text" in self.restored:
            ids, texts = self.restored["controls_by_text"], self.texts
            return dict(zip(map(texts.__getitem__, ids), ids))
        out: dict[bytes, int] = {}
        for i, (t, attr) in enumerate(zip(self.texts, self.attrs)):
            if attr & (A_CONTROL | A_UNKNOWN) and not attr & A_UNUSED:
                out.setdefault(t, i)
        return out

    @cached_property
    def byte_tokens(self) -> dict[int, int]:
        """Byte value -> the id that writes exactly that one byte (a byte token or a one-byte text token)."""
        return {p[0]: i for p, i in self.by_bytes.items() if len(p) == 1}

    @cached_property
    def max_piece(self) -> int:
        return max(map(len, filter(None, self.pieces)), default=0)

    @cached_property
    def is_user_defined(self) -> frozenset[int]:
        return frozenset(i for i, a in enumerate(self.attrs) if a & A_USER_DEFINED)


def header_fields(info) -> dict:
    """What a table takes from a header as it is, with nothing derived: the token texts (as bytes), the
    tokenizer model and pre-tokenizer, the model's name and the file's (vocabulary/cache.py rebuilds a
    saved table around these)."""
    if info.tokens is None:
        raise ValueError(f"{info.path}: read the header with read_tokens=True")
    meta = info.metadata
    return {
        "texts": _as_bytes(info.tokens),
        "model": str(meta.get("tokenizer.ggml.model", "")),
        "pre": str(meta.get("tokenizer.ggml.pre", "") or ""),
        "name": str(meta.get("general.name") or Path(info.path).stem),
        "file": Path(info.path).name,
    }


def _as_bytes(tokens: Sequence[bytes | str]) -> tuple[bytes, ...]:
    """Token texts as bytes (a header gives bytes already: then only a tuple is made)."""
    texts = tuple(tokens)
    if set(map(type, texts)) <= {bytes}:
        return texts  # type: ignore[return-value]
    return tuple(t if isinstance(t, bytes) else t.encode("utf-8") for t in texts)


def _is_padding_name(text: bytes) -> bool:
    return _PADDING_NAME.fullmatch(text) is not None


def _special_ids(texts: Sequence[bytes], model: str, meta: dict) -> dict[str, int]:
    """Role -> id as llama.cpp resolves it: the header's id when in range, else the tokenizer's default;
    for the end of turn, end of message and fill-in-the-middle roles the header leaves unset, the
    first token whose text llama.cpp recognises for the role (llama.cpp takes whichever its hash map
    yields first; this takes the first in its list, so `<|im_end|>` wins over `<|endoftext|>`)."""
    n = len(texts)
    ids = {k: v for k, v in _DEFAULT_IDS.get(model, {}).items() if 0 <= v < n}
    for role in ("bos", "eos", "unk", "eot", *ROLE_TEXTS):
        v = meta.get(f"tokenizer.ggml.{role}_token_id")
        if isinstance(v, int) and 0 <= v < n:
            ids[role] = v
    index = {t: i for i, t in enumerate(texts) if t.startswith(NAMED_PREFIXES)}
    for role, candidates in (("eot", EOT_TEXTS), *ROLE_TEXTS.items()):
        if role in ids:
            continue
        for t in candidates:
            i = index.get(t.encode("utf-8"))
            if i is not None:
                ids[role] = i
                break
    return ids
