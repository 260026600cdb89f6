r"""The grammar tool calls are generated under: llguidance Lark text built from the tools' JSON schemas.

How the laziness is done (llama.cpp's "lazy grammar": free text until the model opens a call, then the
call's grammar): inside llguidance, in one Lark grammar, not in our Constraint. With tool_choice "auto":

    start: TEXT? | TEXT? call more? | bare bare_more?        the trigger is one special token (Qwen2.5)
    start: TEXT? | opened tail more? | bare bare_more?       the trigger is text (the tiny test models)
    TEXT: /(.|\n)+/ & ~/(.|\n)*<tool_call>(.|\n)*/ & ~/\s*\{\s*"name"(.|\n)*/
    opened[lazy]: /(.|\n)*<tool_call>/ & ~/\s*\{\s*"name"(.|\n)*/   text up to the first trigger
    call: <[151657]> tail                       the trigger, then the rest of the call
    tail: "\n" object "\n" <[151658]>           ... closed by its tag (a token or text, like the trigger)
    object: "{\"name\": \"" function "}"
    bare: bare_open function "}"                a call without the tags, opening the reply
    bare_open[lazy]: /\s*\{\s*"name"\s*:\s*"/
    function: "get_weather\", \"arguments\": " args_0 | "get_time\", \"arguments\": " args_1 | ...
    args_0: %json {the tool's parameters}
    more: ("\n" call)+          bare_more: ("\n" object)+        only with parallel_tool_calls

so text is free until the model opens a call, and from there only a well-formed call of one of the tools
can follow (its name, then arguments valid under that tool's schema), then another call or the end.
"required" and a named tool drop TEXT: the first token starts a call; "none" keeps only TEXT, so no call
can be opened, with the tags or without.

Two details are the vocabulary's and the models':
- llguidance never lets a special token match text, so a trigger that is one special token (Qwen2.5's
  `<tool_call>`) is written as that token, and TEXT, which cannot contain it, ends there; a trigger
  that is text is found by the lazy `opened` (a greedy TEXT would swallow its first characters).
  Spelling the trigger in text pieces when it is a token is refused: the tokenizer never does that.
- Qwen2.5-Coder often answers with the call's JSON alone, without the tags (as llama.cpp's Qwen2.5
  Coder handling found): a reply that opens with `{"name"` is that bare call. A reply that opens with
  other JSON is still free text.

Why not a trigger in our own Constraint (inactive until the committed text contains it, then a matcher
for the rest)? A draft that crosses the trigger, a token that ends the trigger and begins the JSON in one
piece, or a trigger spelled in several tokens would each need code of their own there; llguidance
handles all of them at the byte level, and the mask it computes is a deterministic function of the
committed tokens like any other constraint's (constrain.py), so every strategy samples the same
constrained r and drafts are checked against it. Free text costs one mask per position (0.09 ms on
Qwen2.5's 152k vocabulary, measured).

The JSON is spaced as Qwen's template renders calls (Jinja's tojson: ", " and ": ", no newlines), "name"
first, which parse.py relies on when it streams the arguments. Each tool's schema is its own %json (its
`$ref`s resolve against its own root).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..constrain import MAX_GRAMMAR_CHARS
from ..errors import InvalidParameterError
from .formats import CallFormat
from .spec import Tool, ToolRequest

CONSTRAINTS = ("json_schema", "grammar", "regex")
_ANY = r"(.|\n)"
_WS = r"[ \t\r\n]*"
_BARE = _WS + r"\{" + _WS + '"name"'  # how a bare call opens


@dataclass(frozen=True)
class Spelling:
    """How the grammar writes a format's tags for one vocabulary: a special token as `<[id]>`, else text."""

    open: str
    close: str
    open_is_token: bool


def spelling(ens, fmt: CallFormat) -> Spelling:
    """The tags of `fmt` in the ensemble's vocabulary (its primary's, as llguidance sees it)."""
    open_, is_token = _tag(ens, fmt.open)
    return Spelling(open_, _tag(ens, fmt.close)[0], is_token)


def text_spelling(fmt: CallFormat) -> Spelling:
    return Spelling(_lit(fmt.open), _lit(fmt.close), False)


def _tag(ens, text: str) -> tuple[str, bool]:
    ids = ens.tokenize(text, add_bos=False, special=True)
    if len(ids) == 1 and ens._grammar_tokenizer().is_special_token(ids[0]):
        return f"<[{ids[0]}]>", True
    return _lit(text), False


def _lit(text: str) -> str:
    """A Lark string literal (JSON's escapes are Lark's)."""
    return json.dumps(text, ensure_ascii=False)


def _regex_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$/" else c for c in text)


def tool_grammar(req: ToolRequest, fmt: CallFormat, spell: Spelling | None = None) -> str:
    """The Lark grammar of a reply to `req` (see the module docstring). Raises InvalidParameterError
    when it exceeds constrain.MAX_GRAMMAR_CHARS (a grammar's cost grows faster than its length)."""
    spell = spell or text_spelling(fmt)
    trigger = _regex_escape(fmt.open)
    text = f"TEXT: /{_ANY}+/ & ~/{_ANY}*{trigger}{_ANY}*/ & ~/{_BARE}{_ANY}*/"
    if not req.calls_allowed:
        lines = ["start: TEXT?", text]  # no call in either form
    else:
        more, bare_more = (" more?", " bare_more?") if req.parallel else ("", "")
        if req.call_required:
            lines = [f"start: call{more} | object{bare_more}"]
        elif spell.open_is_token:
            lines = [f"start: TEXT? | TEXT? call{more} | bare{bare_more}", text]
        else:
            lines = [
                f"start: TEXT? | opened tail{more} | bare{bare_more}",
                text,
                f"opened[lazy]: /{_ANY}*{trigger}/ & ~/{_BARE}{_ANY}*/",
            ]
        sep = _lit(fmt.separator)
        opening = '{"name"' + fmt.key_separator + '"'
        lines += [
            f"call: {spell.open} tail",
            f"tail: {_lit(fmt.body_prefix)} object {_lit(fmt.body_suffix)} {spell.close}",
            f"object: {_lit(opening)} function {_lit('}')}",
            f"bare: bare_open function {_lit('}')}",
            f'bare_open[lazy]: /{_BARE}{_WS}:{_WS}"/',
            *([f"more: ({sep} call)+", f"bare_more: ({sep} object)+"] if req.parallel else []),
            *_functions(req.callable_tools(), fmt),
        ]
    lines.insert(0, "%llguidance {}")
    out = "\n".join(lines) + "\n"
    if len(out) > MAX_GRAMMAR_CHARS:
        raise InvalidParameterError(
            f"tools: the tools' parameter schemas make a grammar of {len(out)} characters; at most "
            f"{MAX_GRAMMAR_CHARS} are allowed (fewer tools, or smaller schemas)"
        )
    return out


def _functions(tools: tuple[Tool, ...], fmt: CallFormat) -> list[str]:
    """`function`: each tool's name, then its arguments under its own schema."""
    arguments = '"' + fmt.item_separator + '"arguments"' + fmt.key_separator
    spacing = {"whitespace_flexible": False, "item_separator": fmt.item_separator, "key_separator": fmt.key_separator}
    alternatives, rules = [], []
    for k, tool in enumerate(tools):
        alternatives.append(f"{_lit(tool.name + arguments)} args_{k}")
        schema = {**tool.parameters, "x-guidance": spacing}
        rules.append(f"args_{k}: %json " + json.dumps(schema, ensure_ascii=False))
    return ["function: " + " | ".join(alternatives), *rules]


def check_combination(req: ToolRequest, gen_kw: dict) -> None:
    """Tool calls and another constraint (response_format, json_schema, grammar, regex) are refused
    together; with tool_choice "none" the other constraint is kept (no call can be parsed then anyway)."""
    others = [k for k in CONSTRAINTS if gen_kw.get(k)]
    if req.calls_allowed and others:
        raise InvalidParameterError(
            f"tools: tool calls cannot be combined with {others[0]} (or response_format): the calls' own "
            "grammar constrains the reply; send tool_choice 'none' to use your constraint instead"
        )


def constrain_tools(req: ToolRequest, gen_kw: dict, ens, fmt: CallFormat | None = None) -> None:
    """Put the tools' grammar for `ens`'s vocabulary into the generation options, as `grammar` (the
    ensemble's one constraint path). Call it where the ensemble may be used (the server's worker thread:
    it may build llguidance's tokenizer, ~2 s the first time)."""
    from .formats import HERMES

    check_combination(req, gen_kw)
    if not req.calls_allowed and any(gen_kw.get(k) for k in CONSTRAINTS):
        return
    fmt = fmt or HERMES
    gen_kw["grammar"] = tool_grammar(req, fmt, spelling(ens, fmt))
