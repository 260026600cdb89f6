"""Tokenizers for tiny GGUF models with vocabularies unlike the default one (gguf_factory.write_tiny_llama
takes them as ``tokenizer=``): a GPT-2 byte-level BPE vocabulary with merges, and the default
SentencePiece vocabulary with the token kinds real models carry (user-defined, a control-looking token
stored as normal text, an "unused" control token, padding). Pure functions of their arguments.

The BPE vocabulary writes every byte (256 byte-level tokens), whole words built by merges (the merge
list adds one character at a time, so every prefix of a word is a token too), a two-byte character
(é) and a three-byte one (中) whose first two bytes are a token of their own (a partial UTF-8 token,
as Qwen's vocabulary has 1,448), ChatML control tokens, and one normal token whose text lies outside
the byte table (llama.cpp writes it as "[UNK_BYTE_…]").
"""

from __future__ import annotations

import gguf
from gguf_factory import TinyTokenizer, build_vocab

NORMAL = int(gguf.TokenType.NORMAL)
CONTROL = int(gguf.TokenType.CONTROL)
USER_DEFINED = int(gguf.TokenType.USER_DEFINED)
UNUSED = int(gguf.TokenType.UNUSED)

BPE_WORDS = (
    " hello",
    " world",
    "hello",
    " the",
    " def",
    " return",
    " print",
    " x",
    " café",
    " 中文",
    "中",
    "\n\n",
    "    ",
)
BPE_SPECIALS = (
    ("<|endoftext|>", CONTROL),
    ("<|im_start|>", CONTROL),
    ("<|im_end|>", CONTROL),
    ("<think>", USER_DEFINED),
    ("[PAD0]", UNUSED),
)


def _byte_chars() -> list[str]:
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    shifted = [b for b in range(256) if b not in set(keep)]
    table = {b: chr(b) for b in keep}
    table.update({b: chr(256 + n) for n, b in enumerate(shifted)})
    return [table[b] for b in range(256)]


def bpe_tokenizer(words=BPE_WORDS, specials=BPE_SPECIALS) -> TinyTokenizer:
    """A gpt2-model tokenizer: 256 byte tokens, the merges that build `words`, then `specials`."""
    chars = _byte_chars()
    tokens = [(c, 0.0, NORMAL) for c in chars]
    seen = {c for c in chars}
    merges: list[str] = []
    for w in words:
        spelled = [chars[b] for b in w.encode("utf-8")]
        cur = spelled[0]
        for c in spelled[1:]:
            if cur + c not in seen:
                merges.append(f"{cur} {c}")
                seen.add(cur + c)
                tokens.append((cur + c, 0.0, NORMAL))
            cur += c
    tokens.append(("a b", 0.0, NORMAL))  # a literal space is not in the byte table
    first_special = len(tokens)
    tokens += [(text, 0.0, tt) for text, tt in specials]
    eos = first_special  # <|endoftext|>
    return TinyTokenizer(
        tokens,
        model="gpt2",
        merges=merges,
        pre="qwen2",
        bos=eos,
        eos=eos,
        unk=None,
        add_bos=False,
        add_space_prefix=None,
    )


SPM_EXTRAS = (
    ("<think>", USER_DEFINED),
    ("<|im_end|>", NORMAL),  # llama.cpp makes it a control token and an end of generation
    ("<unused0>", CONTROL),  # llama.cpp makes it unused
    ("[PAD0]", UNUSED),
)


def spm_tokenizer(extras=SPM_EXTRAS) -> TinyTokenizer:
    """The default SentencePiece vocabulary with `extras` appended."""
    return TinyTokenizer(build_vocab() + [(text, 0.0, tt) for text, tt in extras])


def spm_with_extra_words(words=("zebra", "quartz")) -> TinyTokenizer:
    """The default SentencePiece vocabulary followed by real word pieces it lacks (`▁zebra` and every
    prefix the bigram merger needs to reach it): a vocabulary the default one is a strict prefix of,
    whose extra entries are tokens a prompt produces, not padding."""
    vocab = build_vocab()
    seen = {t for t, _, _ in vocab}
    for w in words:
        piece = "\u2581" + w
        for k in range(2, len(piece) + 1):
            if piece[:k] not in seen:
                seen.add(piece[:k])
                vocab.append((piece[:k], float(k), NORMAL))
    return TinyTokenizer(vocab)
