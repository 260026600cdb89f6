"""Structured output: the ensemble constrained to a JSON schema, a grammar or a regex (docs/design.md §9).

The constraint engine is llguidance (what llama.cpp itself can use), with a tokenizer built from the
first member's llama.cpp vocabulary (the members share one). At each position its matcher gives the
tokens the grammar allows after the committed text; r is masked to them and renormalised before the
truncation filters (as llama.cpp applies a grammar before its samplers). The mask is a deterministic
function of the context, like the filters, so every strategy samples the same constrained r. Drafts
are masked alike (the matcher is advanced over the pending drafts, asked, and rolled back), so a
proposer never wastes a draft the grammar forbids; a prompt-lookup draft outside the grammar has
r = 0 and is rejected.

Constraints are text, never file names: the API and the server take a schema as a dict or JSON text,
a grammar as GBNF or Lark text and a regex as text, and nothing here opens a file (a server that read
the file a request named disclosed /etc/shadow in its error message). Reading `--grammar FILE` and
`--json-schema FILE` is the CLI's convenience (cli/options.py). Bounds, checked before llguidance sees
the input (its native code overflowed its stack on a schema dict 10,000 levels deep): grammar and regex
text of at most MAX_GRAMMAR_CHARS characters, JSON text of at most MAX_SCHEMA_CHARS, a schema at most
MAX_SCHEMA_DEPTH dicts and lists deep (llguidance itself refuses a little less: it parses with
serde_json's limit of 128). A constraint no text can satisfy (rules that only refer to each other, a
`$ref` cycle) is refused when its matcher is built; one whose matcher fails during generation
(llguidance's lexer gives up on some counted regexes) ends the generation with finish_reason "error"
and the note "constraint failed: ...".
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InvalidParameterError

MAX_GRAMMAR_CHARS = 2**16  # characters of grammar or regex text: llguidance's check of a GBNF/Lark grammar
# grows faster than its length (0.25 s for 64 Ki characters, 20 s for 1 Mi, on the worker thread)
MAX_SCHEMA_CHARS = 2**20  # characters of JSON-schema text (llguidance refuses a too-big one in < 1 s)
MAX_SCHEMA_DEPTH = 128  # nested dicts and lists in a JSON schema (serde_json's own limit)
MAX_SCHEMA_ITEMS = 1_000_000  # keys and list items in a JSON schema, all levels together


class Grammar(str):
    """llguidance grammar text that remembers which option it came from (json_schema, grammar or
    regex), so that a refusal at generation time names the right request field."""

    option: str = "constraint"


def grammar_of(json_schema: Any = None, grammar: Any = None, regex: Any = None) -> Grammar | None:
    """The llguidance grammar for at most one of: a JSON schema (a dict, or JSON text), a GBNF or
    Lark grammar (text), a regex (text). None when nothing constrains the output. Never opens a
    file: a string is the constraint itself, whatever it looks like. Raises InvalidParameterError
    for anything llguidance refuses, and before llguidance for text over its size limit or a
    schema deeper than MAX_SCHEMA_DEPTH (see the module's docstring)."""
    given = [(k, v) for k, v in (("json_schema", json_schema), ("grammar", grammar), ("regex", regex)) if v]
    if not given:
        return None
    if len(given) > 1:
        raise InvalidParameterError(
            f"give one of json_schema, grammar and regex, not {' and '.join(k for k, _ in given)}"
        )
    option, value = given[0]
    from llguidance import LLMatcher
    from llguidance.gbnf_to_lark import any_to_lark

    try:
        if option == "json_schema":
            text = LLMatcher.grammar_from_json_schema(_schema(value))
        elif option == "grammar":
            text = LLMatcher.grammar_from_lark(any_to_lark(_text(option, value)))
        else:
            text = LLMatcher.grammar_from_regex(_text(option, value))
    except InvalidParameterError:
        raise
    except RecursionError:  # the GBNF converter is recursive Python
        raise InvalidParameterError(f"{option} is nested too deeply") from None
    except Exception as e:  # GbnfToLarkError, ValueError, TypeError, pyo3 errors: all the input's fault
        raise InvalidParameterError(f"{option}: {_first_line(e)}{_file_name_hint(value)}") from None
    error = LLMatcher.validate_grammar(text)
    if error:
        raise InvalidParameterError(f"{option}: {_first_line(error)}{_file_name_hint(value)}")
    out = Grammar(text)
    out.option = option
    return out


def _text(option: str, value: Any, limit: int = MAX_GRAMMAR_CHARS) -> str:
    """A grammar or regex as the text llguidance takes, or a clear error for anything else."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidParameterError(
            f"{option} must be text (str), not bytes: decode it first, e.g. data.decode('utf-8')"
        )
    if isinstance(value, os.PathLike):
        raise InvalidParameterError(
            f"{option} takes the {option} itself as text, not a path: read the file first, e.g. Path(...).read_text()"
        )
    if not isinstance(value, str):
        raise InvalidParameterError(f"{option} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidParameterError(f"{option} has {len(value)} characters; at most {limit} are allowed")
    return value


def _schema(value: Any) -> dict:
    """A JSON schema as a dict: JSON text parsed (never a file name), its size and depth bounded."""
    if not isinstance(value, (dict, str, bytes, bytearray, memoryview, os.PathLike)):
        raise InvalidParameterError(
            f"json_schema must be a JSON object (a dict) or its JSON text, got {type(value).__name__}"
        )
    if not isinstance(value, dict):
        text = _text("json_schema", value, MAX_SCHEMA_CHARS)
        try:
            value = json.loads(text)
        except RecursionError:
            raise InvalidParameterError(f"json_schema is nested more than {MAX_SCHEMA_DEPTH} levels deep") from None
        except ValueError as e:
            raise InvalidParameterError(f"json_schema is not valid JSON ({e}){_file_name_hint(text)}") from None
        if not isinstance(value, dict):
            raise InvalidParameterError("json_schema must be a JSON object")
    _check_schema_shape(value)
    return value


def _check_schema_shape(schema: dict) -> None:
    """Depth and size of a schema, walked without recursion: llguidance's conversion of a Python dict
    is recursive native code, and a dict 10,000 levels deep overflowed its stack (a segfault). A
    dict that contains itself counts as too deep; one whose parts are shared as too large."""
    stack: list[tuple[Any, int]] = [(schema, 1)]
    items = 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise InvalidParameterError(f"json_schema is nested more than {MAX_SCHEMA_DEPTH} levels deep")
        children = node.values() if isinstance(node, dict) else node
        items += len(children)
        if items > MAX_SCHEMA_ITEMS:
            raise InvalidParameterError(f"json_schema has more than {MAX_SCHEMA_ITEMS} keys and items")
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list, tuple)))


def _file_name_hint(value: Any) -> str:
    """The API used to read a grammar or schema from a file named in the string; a string shaped like
    a file name that fails to parse gets a hint (from its text alone: nothing is looked up)."""
    if not isinstance(value, str) or len(value) > 4096 or any(c.isspace() for c in value.strip()):
        return ""
    v = value.strip()
    if v.startswith(("/", "~", "./", "../")) or v.endswith((".json", ".gbnf", ".lark", ".txt")):
        return " (this takes the text itself, not a file name: read the file and pass its contents)"
    return ""


class Constraint:
    """One generation's matcher: what the grammar allows after the committed tokens (and drafts).

    Refuses (InvalidParameterError) a grammar that no text satisfies: llguidance finds that out when
    it computes the first mask. A matcher that fails later (a lexer or parser limit: llguidance then
    allows only the end-of-generation token) records why in `failure`, and the generation ends with
    finish_reason "error" instead of an empty or cut-off "stop"."""

    def __init__(self, tokenizer, grammar: str, n_vocab: int):
        from llguidance import LLMatcher

        self.option = getattr(grammar, "option", "constraint")
        self.n_vocab = n_vocab
        self.failure: str | None = None
        self.matcher = LLMatcher(tokenizer, grammar, log_level=0)  # errors are reported here, not printed
        self._first: np.ndarray | None = None if self.matcher.is_error() else self._mask()
        if self.matcher.is_error():
            raise InvalidParameterError(_refusal(self.option, self.matcher.get_error()))

    def allowed(self, ahead: Sequence[int] = ()) -> np.ndarray:
        """Boolean mask of the tokens allowed after the committed tokens and then `ahead` (drafts);
        all False if `ahead` itself leaves the grammar."""
        if not ahead and self._first is not None:
            return self._first  # computed when the matcher was built, nothing committed since
        m = self.matcher
        if ahead:
            n = m.try_consume_tokens(list(ahead))
            if n < len(ahead):
                if n:
                    m.rollback(n)
                self._note_failure()
                return np.zeros(self.n_vocab, dtype=bool)
        try:
            return self._mask()
        finally:
            if ahead:
                m.rollback(len(ahead))

    def commit(self, token: int) -> None:
        self._first = None
        if not self.matcher.consume_token(token):
            self._note_failure()

    def _mask(self) -> np.ndarray:
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        self._note_failure()
        return np.unpackbits(bits, bitorder="little")[: self.n_vocab].astype(bool)

    def _note_failure(self) -> None:
        if self.failure is None and self.matcher.is_error():
            self.failure = _first_line(self.matcher.get_error())


def _refusal(option: str, error: str) -> str:
    if error.startswith("NoExtensionBias"):  # the first mask allows nothing but the end
        return (
            f"{option}: no text satisfies this constraint (its rules never produce any text: rules that only "
            "refer to each other or to themselves, or a $ref cycle)"
        )
    return f"{option} was refused: {_first_line(error)}"


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


def _first_line(e: object) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
