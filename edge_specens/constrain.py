"""Structured output: the ensemble constrained to a JSON schema, a grammar or a regex (docs/design.md §9).

The constraint engine is llguidance (what llama.cpp itself can use), with a tokenizer built from the
first member's llama.cpp vocabulary (the members share one). At each position its matcher gives the
tokens the grammar allows after the committed text; r is masked to them and renormalised before the
truncation filters (as llama.cpp applies a grammar before its samplers). The mask is a deterministic
function of the context, like the filters, so every strategy samples the same constrained r. Drafts
are masked alike (the matcher is advanced over the pending drafts, asked, and rolled back), so a
proposer never wastes a draft the grammar forbids; a prompt-lookup draft outside the grammar has
r = 0 and is rejected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InvalidParameterError


def grammar_of(json_schema: Any = None, grammar: str | None = None, regex: str | None = None) -> str | None:
    """The llguidance grammar for at most one of: a JSON schema (dict, JSON text or a file), a GBNF or
    Lark grammar (text or a file), a regex. None when nothing constrains the output."""
    given = [k for k, v in (("json_schema", json_schema), ("grammar", grammar), ("regex", regex)) if v]
    if not given:
        return None
    if len(given) > 1:
        raise InvalidParameterError(f"give one of json_schema, grammar and regex, not {' and '.join(given)}")
    from llguidance import LLMatcher
    from llguidance.gbnf_to_lark import any_to_lark

    try:
        if json_schema:
            schema = json_schema
            if isinstance(schema, str):
                schema = json.loads(_read_if_file(schema))
            if not isinstance(schema, dict):
                raise InvalidParameterError("json_schema must be a JSON object")
            text = LLMatcher.grammar_from_json_schema(schema)
        elif grammar:
            text = LLMatcher.grammar_from_lark(any_to_lark(_read_if_file(grammar)))
        else:
            text = LLMatcher.grammar_from_regex(str(regex))
    except (ValueError, TypeError) as e:  # JSON, GBNF and schema errors
        raise InvalidParameterError(f"{given[0]}: {_first_line(e)}") from None
    error = LLMatcher.validate_grammar(text)
    if error:
        raise InvalidParameterError(f"{given[0]}: {_first_line(error)}")
    return text


class Constraint:
    """One generation's matcher: what the grammar allows after the committed tokens (and drafts)."""

    def __init__(self, tokenizer, grammar: str, n_vocab: int):
        from llguidance import LLMatcher

        self.matcher = LLMatcher(tokenizer, grammar)
        if self.matcher.is_error():
            raise InvalidParameterError(f"the grammar was refused: {_first_line(self.matcher.get_error())}")
        self.n_vocab = n_vocab

    def allowed(self, ahead: Sequence[int] = ()) -> np.ndarray:
        """Boolean mask of the tokens allowed after the committed tokens and then `ahead` (drafts);
        all False if `ahead` itself leaves the grammar."""
        m = self.matcher
        if ahead:
            n = m.try_consume_tokens(list(ahead))
            if n < len(ahead):
                if n:
                    m.rollback(n)
                return np.zeros(self.n_vocab, dtype=bool)
        try:
            bits = np.frombuffer(m.compute_bitmask(), dtype=np.uint8)
        finally:
            if ahead:
                m.rollback(len(ahead))
        return np.unpackbits(bits, bitorder="little")[: self.n_vocab].astype(bool)

    def commit(self, token: int) -> None:
        self.matcher.consume_token(token)


def tokenizer_for(member) -> Any:
    """llguidance's tokenizer for a llama.cpp member's vocabulary (~2 s; the ensemble keeps it)."""
    try:
        from llguidance.llamacpp import lltokenizer_from_vocab
    except ImportError:
        raise InvalidParameterError("structured output needs llguidance: pip install llguidance") from None
    vocab = getattr(member, "vocab", None)
    if vocab is None:
        raise InvalidParameterError(f"{member.name}: structured output needs a llama.cpp member")
    return lltokenizer_from_vocab(vocab, n_vocab=member.n_vocab)


def mask(p: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """p restricted to the allowed tokens, renormalised (uniform over them if p gives them nothing)."""
    out = np.where(allowed[: p.size], p, 0.0).astype(p.dtype, copy=False)
    total = out.sum(dtype=np.float64)
    if total <= 0.0:
        out = allowed[: p.size].astype(p.dtype)
        total = out.sum(dtype=np.float64)
    return out * (1.0 / total)


def _read_if_file(value: str) -> str:
    """Grammars and schemas may be given as a file name (the CLI's --json-schema schema.json)."""
    if len(value) < 4096 and "\n" not in value and os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return f.read()
    return value


def _first_line(e: object) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
