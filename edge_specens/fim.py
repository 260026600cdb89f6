"""Fill-in-the-middle: the prompt that asks a FIM-trained model for the text between a prefix and a suffix.

The layout is llama.cpp's `/infill` (tools/server, `format_prompt_infill`), prefix-suffix-middle order,
with the repository-level pattern of Qwen2.5-Coder (arXiv 2409.12186) when the model has those tokens:

    [FIM_REP]myproject\\n [FIM_SEP]file0\\n text0 ... [FIM_SEP]filename\\n
    [BOS] [FIM_PRE] prefix prompt [FIM_SUF] suffix [FIM_MID]

and the model writes the middle until an end-of-generation token (llama.cpp counts FIM_PAD, FIM_REP and
FIM_SEP as such). The FIM tokens are the model's own: llama.cpp reads them from the GGUF
(tokenizer.ggml.fim_pre_token_id ... or the older prefix/suffix/middle_token_id keys) and otherwise
recognises them by their text (`<|fim_prefix|>`, `<fim-prefix>`, `<PRE>`, ...); a model without them
cannot fill in and gets InvalidParameterError. User text is tokenized with special tokens off, so a
file that holds the text "<|fim_middle|>" stays text.

What does not fit the context (less the room kept for the middle: max_tokens, at most a quarter of the
context) is cut as llama.cpp cuts it: the extra files first
(the oldest), then the start of the prefix and the end of the suffix, 3:1, since the text nearest the
cursor matters most to an editor's completion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ContextOverflowError, InvalidParameterError

MAX_EXTRA_CHUNKS = 256  # input_extra files one request may send
# GGUF keys, newest first (llama.cpp's LLM_KV_TOKENIZER_FIM_*; the PREFIX/SUFFIX/MIDDLE ones are older)
_KEYS = {
    "prefix": ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"),
    "suffix": ("tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"),
    "middle": ("tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"),
    "repo": ("tokenizer.ggml.fim_rep_token_id",),
    "sep": ("tokenizer.ggml.fim_sep_token_id",),
}
_LLAMA = {
    "prefix": "llama_vocab_fim_pre",
    "suffix": "llama_vocab_fim_suf",
    "middle": "llama_vocab_fim_mid",
    "repo": "llama_vocab_fim_rep",
    "sep": "llama_vocab_fim_sep",
}


@dataclass(frozen=True)
class FimTokens:
    prefix: int
    suffix: int
    middle: int
    repo: int | None = None  # repository-level context (Qwen2.5-Coder's <|repo_name|>)
    sep: int | None = None  # file separator (<|file_sep|>)


@dataclass(frozen=True)
class ExtraChunk:
    """A file of context beside the one being edited (llama.cpp's input_extra item)."""

    text: str
    filename: str = "tmp"


def fim_tokens(ens) -> FimTokens:
    """The first member's FIM tokens (members share one vocabulary), or InvalidParameterError."""
    member = ens.members[getattr(ens, "primary", 0)]  # the prompt's tokens are the primary's
    found = _llama_fim(member) or _metadata_fim(member)
    pre, suf, mid = found.get("prefix"), found.get("suffix"), found.get("middle")
    if pre is None or suf is None or mid is None:
        raise InvalidParameterError(
            f"{member.name} has no fill-in-the-middle tokens (such as <|fim_prefix|>, <|fim_suffix|> and "
            "<|fim_middle|>, or tokenizer.ggml.fim_pre_token_id, fim_suf_token_id and fim_mid_token_id in its "
            "GGUF): a suffix or an infill needs a model trained for it, such as Qwen2.5-Coder"
        )
    return FimTokens(pre, suf, mid, found.get("repo"), found.get("sep"))


def _llama_fim(member) -> dict[str, int | None]:
    """llama.cpp's own answer (GGUF keys, else the tokens' text), for members with a llama.cpp vocabulary."""
    lib, vocab = getattr(member, "_lib", None), getattr(member, "vocab", None)
    if lib is None or vocab is None or not hasattr(lib, _LLAMA["prefix"]):
        return {}
    member._check_open()
    return {k: _id(getattr(lib, fn)(vocab)) for k, fn in _LLAMA.items()}


def _metadata_fim(member) -> dict[str, int | None]:
    metadata = getattr(member, "metadata", None)
    meta = metadata() if callable(metadata) else {}
    return {k: next((_id(meta[key]) for key in keys if key in meta), None) for k, keys in _KEYS.items()}


def _id(value) -> int | None:
    try:
        v = int(value)
    except (TypeError, ValueError):
        return None
    return v if v >= 0 else None


def extra_chunks(value) -> list[ExtraChunk]:
    """input_extra as chunks: a list of {"text": str, "filename": str} (InvalidParameterError otherwise)."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise InvalidParameterError('input_extra must be a list of {"text": ..., "filename": ...} objects')
    if len(value) > MAX_EXTRA_CHUNKS:
        raise InvalidParameterError(f"input_extra may hold at most {MAX_EXTRA_CHUNKS} chunks, got {len(value)}")
    out = []
    for i, c in enumerate(value):
        if isinstance(c, ExtraChunk):
            out.append(c)
            continue
        if not isinstance(c, dict) or not isinstance(c.get("text", ""), str):
            raise InvalidParameterError(f'input_extra[{i}] must be an object with a string "text"')
        name = c.get("filename", "tmp")
        if not isinstance(name, str) or "\n" in name:
            raise InvalidParameterError(f"input_extra[{i}].filename must be a string without line breaks")
        out.append(ExtraChunk(c.get("text", ""), name or "tmp"))
    return out


def infill_tokens(ens, prefix: str, suffix: str, extra=None, prompt: str = "", max_tokens: int = 0) -> list[int]:
    """The prompt's token ids for a fill between `prefix` and `suffix` (extra: ExtraChunks or input_extra's
    objects), fitted into the context with room for max_tokens (at most a quarter of it). Raises
    InvalidParameterError (no FIM tokens, not text) or ContextOverflowError."""
    chunks = extra_chunks(extra)
    for name, v in (("prefix", prefix), ("suffix", suffix), ("prompt", prompt)):
        if not isinstance(v, str):
            raise InvalidParameterError(f"the infill {name} must be a string, got {type(v).__name__}")
    fim = fim_tokens(ens)
    # room kept for the middle: max_tokens, but at most a quarter of the context (a server's default
    # max_tokens is the whole context); a longer middle then stops when the context is full
    budget = ens.n_ctx - min(max(max_tokens, 1), ens.n_ctx // 4)
    # no token holds more characters than the longest vocabulary entry: text beyond that many characters
    # per token of the budget cannot fit anyway, so it is cut before tokenizing (megabytes take seconds)
    chars = max(budget, 0) * ens.max_token_chars if ens.max_token_chars else None
    if chars is not None:
        prefix, suffix = prefix[len(prefix) - min(chars, len(prefix)) :], suffix[:chars]

    def text(s: str) -> list[int]:
        return ens.tokenize(s, add_bos=False, special=False) if s else []

    head = ens.tokenize("", add_bos=None, special=False)  # [BOS] when the model wants one
    pre, mid_prompt, suf = text(prefix), text(prompt), text(suffix)
    fixed = len(head) + 3 + len(mid_prompt)  # PRE, SUF, MID
    room = budget - fixed
    if room < 0:
        raise ContextOverflowError(
            f"the infill prompt needs {fixed} tokens besides the prefix and suffix, and max_tokens {max_tokens}; "
            f"the context holds {ens.n_ctx}"
        )
    if len(pre) + len(suf) > room:  # llama.cpp's split: 3/4 for the prefix's end, 1/4 for the suffix's start
        keep_suf = min(len(suf), max(room // 4, room - len(pre)))
        keep_pre = min(len(pre), room - keep_suf)
        pre, suf = pre[len(pre) - keep_pre :], suf[:keep_suf]
    room -= len(pre) + len(suf)
    extras = _extra_tokens(ens, fim, chunks, text)
    extras = extras[len(extras) - min(room, len(extras)) :] if room > 0 else []
    return [*extras, *head, fim.prefix, *pre, *mid_prompt, fim.suffix, *suf, fim.middle]


def _extra_tokens(ens, fim: FimTokens, extra: Sequence[ExtraChunk], text) -> list[int]:
    limit = ens.n_ctx * ens.max_token_chars if ens.max_token_chars else None  # more cannot fit (see above)
    out: list[int] = []
    if fim.repo is not None:
        out += [fim.repo, *text("myproject\n")]
    chunks, total = [], 0
    for c in reversed(extra):  # the newest files are kept when the context is short
        total += len(c.text)
        if limit is not None and total > limit:
            break
        chunks.append(c)
    for c in reversed(chunks):
        if fim.sep is not None:
            out += [fim.sep, *text(c.filename + "\n")]
        else:
            out += text("\n\n--- snippet ---\n\n")  # llama.cpp's separator for models without FIM_SEP
        out += text(c.text)
    if fim.sep is not None:
        out += [fim.sep, *text("filename\n")]
    return out
