"""The exact bytes each token writes, computed from a GGUF header the way llama.cpp does.

Members with different tokenizers can only be compared, and text can only travel between them, as
*bytes*: vocabulary strings use private spellings of the same text (SentencePiece writes a space as
`▁`, GPT-2 byte-level BPE writes every byte as a printable character, so a space is `Ġ` and a newline
`Ċ`; SentencePiece also has `<0xNN>` byte tokens). `token_pieces` turns a header's token list, token
types and tokenizer model into what `llama_token_to_piece(vocab, id, ..., lstrip=0, special=False)`
writes for every id: `bytes` for text, `None` for the tokens that never write text (control, unknown,
unused, undefined). It mirrors llama-vocab.cpp (llama-cpp-python 0.3.x), including the corrections
llama.cpp makes at load (`loaded_attrs`: tokens whose text marks an end of generation or a
fill-in-the-middle role become control tokens; control tokens named "unused" become unused), so that a
table built from the header alone agrees with the loaded model; tests/test_vocabulary.py checks
pieces, attributes and the end-of-generation set against llama.cpp on tiny SentencePiece and BPE models.
Where llama.cpp picks "the first" of several tokens for a role it walks a hash map; here every token
with such a text is marked, and the first in llama.cpp's list of texts wins (tables stay deterministic).

Pure Python: building the table for a 262k vocabulary takes well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

# GGUF token types (gguf-py TokenType; llama.cpp LLAMA_TOKEN_TYPE_*): what a header stores
UNDEFINED, NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = range(7)

# llama.cpp's token attributes (llama.h LLAMA_TOKEN_ATTR_*): what a loaded model holds. They are bits:
# the load-time corrections below add CONTROL or UNUSED to a token's type instead of replacing it.
A_UNKNOWN, A_UNUSED, A_NORMAL, A_CONTROL, A_USER_DEFINED, A_BYTE = 1, 2, 4, 8, 16, 32
ATTR_OF_TYPE = {
    UNDEFINED: 0,
    NORMAL: A_NORMAL,
    UNKNOWN: A_UNKNOWN,
    CONTROL: A_CONTROL,
    USER_DEFINED: A_USER_DEFINED,
    UNUSED: A_UNUSED,
    BYTE: A_BYTE,
}
A_SILENT = A_UNKNOWN | A_CONTROL  # written as nothing by token_to_piece(special=False)

# tokenizer.ggml.model -> llama.cpp vocabulary type
SPM_MODELS = frozenset({"llama"})  # SentencePiece: `▁` for a space, <0xNN> byte tokens
BPE_MODELS = frozenset({"gpt2", "gemma4", "hybriddna", "whitespace"})  # byte-level BPE (GPT-2 table)
NORMALISING_MODELS = frozenset({"bert", "t5"})  # WPM and UGM: their tokenizers rewrite the text
# BPE pre-tokenizers whose tokens spell a space `▁` instead of GPT-2's byte table (llama-vocab.cpp)
_ESCAPED_BPE_PRE = frozenset({"gemma4", "granite-embed-multi-311m", "sarvam-moe"})

# Texts llama.cpp marks as end of generation (llama-vocab.cpp, the special_eog_ids list)
EOG_TEXTS = frozenset(
    {
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|flush|>",
        "<|calls|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "</s>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "[EOS]",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<eos>",
        "<turn|>",
        "<|tool_response>",
        "<｜end▁of▁sentence｜>",
        "[e~[",
    }
)
# Texts llama.cpp looks for when the header names no end-of-turn token, in its order of preference
EOT_TEXTS = (
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
)
# Texts llama.cpp turns into control tokens when the header names no id for their role
ROLE_TEXTS = {
    "eom": ("<|eom_id|>",),
    "fim_pre": (
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<｜fim▁begin｜>",
        "<PRE>",
        "▁<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ),
    "fim_suf": (
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<｜fim▁hole｜>",
        "<SUF>",
        "▁<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ),
    "fim_mid": (
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<｜fim▁end｜>",
        "<MID>",
        "▁<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
# how every text llama.cpp recognises by name starts
NAMED_PREFIXES = (b"<", b"[", b"_", b"\xe2\x96\x81<")
# gpt-oss: llama.cpp always renders these as text
_RENDERED_TEXTS = frozenset({"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"})


@lru_cache(maxsize=1)
def gpt2_byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level table, inverted: the printable character that stands for each byte -> the byte.

    Printable Latin-1 bytes stand for themselves; the other 68 (control bytes, space, 0x7F-0xA0,
    0xAD) are shifted to U+0100.. in byte order, so a space is `Ġ` (U+0120) and a newline `Ċ`."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in keep}
    shifted = [b for b in range(256) if b not in set(keep)]
    table.update({chr(256 + n): b for n, b in enumerate(shifted)})
    return table


def _llama_utf8_codepoints(data: bytes) -> list[str]:
    """llama.cpp's lenient UTF-8 decoder (unicode_cpts_from_utf8): an invalid byte becomes U+FFFD."""
    out, i, n = [], 0, len(data)
    while i < n:
        b = data[i]
        size = 1 if b < 0x80 else 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 0
        if b & 0xC0 == 0x80 or size == 0 or i + size > n or any(c & 0xC0 != 0x80 for c in data[i + 1 : i + size]):
            out.append("\ufffd")
            i += 1
            continue
        if size == 1:
            cpt = b
        else:
            cpt = b & (0x7F >> size)
            for c in data[i + 1 : i + size]:
                cpt = (cpt << 6) | (c & 0x3F)
        out.append(chr(cpt) if cpt < 0xD800 or cpt > 0xDFFF else "\ufffd")
        i += size
    return out


def gpt2_decode(text: bytes) -> bytes:
    """The bytes a GPT-2 byte-level token text stands for (llama.cpp's llama_decode_text).

    A character outside the table is written the way llama.cpp writes it, "[UNK_BYTE_0x..<text>]",
    so the table still agrees with what the loaded model writes."""
    table = gpt2_byte_of_char()
    try:
        chars: Sequence[str] = text.decode("utf-8")
    except UnicodeDecodeError:
        chars = _llama_utf8_codepoints(text)
    if all(c in table for c in chars):
        return bytes(table[c] for c in chars)
    out = bytearray()
    for c in chars:
        if c in table:
            out.append(table[c])
        else:
            out += b"[UNK_BYTE_0x" + c.encode("utf-8", "surrogatepass").hex().encode() + text + b"]"
    return bytes(out)


def _byte_of(text: bytes) -> int:
    """The byte of a `<0xNN>` token (llama.cpp reads the two hex digits at offset 3)."""
    try:
        return int(text[3:5], 16) & 0xFF
    except ValueError:
        return 0


def _as_bytes(t: bytes | str) -> bytes:
    return t if isinstance(t, bytes) else t.encode("utf-8")


def loaded_attrs(texts: Sequence[bytes], types: Sequence[int] | None, metadata: dict | None = None) -> list[int]:
    """Token attributes as llama.cpp holds them after loading (llama.h LLAMA_TOKEN_ATTR_* bits).

    Start from the header's types, then llama.cpp's corrections (llama-vocab.cpp, in its order):
    (1) a token whose text names a role the header leaves unset (end of turn, end of message, the
    fill-in-the-middle markers) gains CONTROL; (2) a control token whose text contains "unused" gains
    UNUSED; (3) every token whose text llama.cpp knows as an end of generation gains CONTROL;
    (4) gpt-oss's channel markers become USER_DEFINED (always rendered as text)."""
    meta = metadata or {}
    n = len(texts)
    header = list(types[:n]) if types is not None else []
    out = [ATTR_OF_TYPE.get(int(t), 0) for t in header] + [A_NORMAL] * (n - len(header))
    role_texts = {t for role, ts in ROLE_TEXTS.items() if f"tokenizer.ggml.{role}_token_id" not in meta for t in ts}
    if "tokenizer.ggml.eot_token_id" not in meta:
        role_texts.update(EOT_TEXTS)
    named = [
        (i, raw.decode("utf-8", errors="replace"))
        for i, raw in enumerate(texts)
        if len(raw) <= 40 and raw.startswith(NAMED_PREFIXES)  # how every text below starts: skips the decode
    ]
    for i, text in named:
        if text in role_texts:
            out[i] |= A_CONTROL
    for i, raw in enumerate(texts):
        if out[i] & A_CONTROL and b"unused" in raw:
            out[i] |= A_UNUSED
    for i, text in named:
        if text in EOG_TEXTS:
            out[i] |= A_CONTROL
        if text in _RENDERED_TEXTS:
            out[i] = A_USER_DEFINED
    return out


def token_pieces(
    texts: Sequence[bytes | str], attrs: Sequence[int], model: str, pre: str | None = None
) -> list[bytes | None]:
    """What every token writes (llama_token_to_piece with special=False, lstrip=0): bytes, or None for a
    token that never writes text (control, unknown, unused, undefined).

    `attrs` are the loaded attributes (`loaded_attrs`); `model` is tokenizer.ggml.model and `pre`
    tokenizer.ggml.pre. Raises ValueError for a tokenizer model whose pieces this module cannot
    compute (rwkv, plamo2, none: the vocabulary package refuses those)."""
    raw = [_as_bytes(t) for t in texts]
    if model in SPM_MODELS or model in NORMALISING_MODELS:
        escaped = True
    elif model in BPE_MODELS:
        escaped = model == "gemma4" or (pre or "") in _ESCAPED_BPE_PRE
    else:
        raise ValueError(f"no byte table for tokenizer model {model!r}")
    out: list[bytes | None] = []
    for text, attr in zip(raw, attrs):
        if attr & A_SILENT:
            out.append(None)
        elif attr & A_USER_DEFINED:
            out.append(text)
        elif attr & A_NORMAL:
            out.append(text.replace(b"\xe2\x96\x81", b" ") if escaped else gpt2_decode(text))
        elif attr & A_BYTE:
            out.append(bytes([_byte_of(text)]))
        else:  # unused, undefined
            out.append(None)
    return out
