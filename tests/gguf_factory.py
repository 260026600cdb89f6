"""Tiny random-weight GGUF models (and deliberately broken files) for the test suite.

Everything here is a pure function of its arguments: the same arguments give byte-identical files.
A default model (2 layers, n_embd 32, 519-token vocabulary, all tensors F32) is written in a few
milliseconds and loads in llama.cpp (llama-cpp-python 0.3.36) in a few milliseconds more.

Model layout (architecture "llama"):

* Vocabulary (SentencePiece / ``tokenizer.ggml.model = "llama"``), ids in this order:
  ``<unk>`` (0, UNKNOWN), ``<s>`` (1 = BOS, CONTROL), ``</s>`` (2 = EOS, CONTROL), the 256 byte tokens
  ``<0x00>`` .. ``<0xFF>`` (ids 3..258, BYTE), ``▁`` (259), single characters (letters, digits,
  punctuation), then word pieces with the SPM ``▁`` prefix together with every prefix of them
  (``▁h``, ``▁he``, ``▁hel``, ... ``▁hello``) so llama.cpp's bigram merger can reach the whole word.
  Optionally ``n_vocab`` pads the shared vocabulary with filler tokens ``▁tokNNNN`` (NORMAL), and
  ``extra_pad_tokens`` appends ``[PAD0]``, ``[PAD1]``, ... (UNUSED) after everything shared.
* Weights: random normal from ``np.random.default_rng(seed)``. The shared part of every tensor is
  drawn first and in a fixed order; pad rows come from a separate generator. Hence, for one seed,
  the ``"base"``/``"other"`` variants and any ``extra_pad_tokens`` have *identical* weights on the
  shared ids: their logits agree on ids below ``BASE_VOCAB_SIZE`` (up to float noise).
* Logits: the output matrix is scaled so that, for any context, the logits over the vocabulary are
  ~ N(0, logit_scale**2) (RMSNorm fixes the norm of the final hidden state). With the default
  ``logit_scale=4.5`` and 519 tokens the top-5 tokens typically hold ~85% of the mass (10th
  percentile ~65%) and the top-1 ~50%: peaked, but not one-hot. Attention contributes a sizeable
  share of the final hidden state, so the distribution depends on the context, not just on the last
  token. Pad rows of ``extra_pad_tokens`` get random output rows of the same scale (the worst case:
  they carry real probability mass that an ensemble must cut away).
"""

from __future__ import annotations

import os
import pathlib
import struct
from dataclasses import dataclass, field

import gguf
import numpy as np

__all__ = [
    "BASE_VOCAB_SIZE",
    "BOS_ID",
    "EOS_ID",
    "UNK_ID",
    "BYTE_TOKEN_OFFSET",
    "OTHER_VOCAB_DIFF_ID",
    "OTHER_VOCAB_DIFF_TEXT",
    "SIMPLE_CHAT_TEMPLATE",
    "TOOLS_CHAT_TEMPLATE",
    "FIM_TOKENS",
    "DEFAULT_LOGIT_SCALE",
    "GGUF_MAGIC_BYTES",
    "HEADER_VERSION_OFFSET",
    "HEADER_TENSOR_COUNT_OFFSET",
    "HEADER_KV_COUNT_OFFSET",
    "HEADER_SIZE",
    "HUGE_COUNT",
    "build_vocab",
    "TinyTokenizer",
    "write_tiny_llama",
    "write_truncated",
    "write_random_bytes",
    "write_empty",
    "write_bad_magic",
    "write_bad_version",
    "write_huge_tensor_count",
    "write_huge_kv_count",
    "write_huge_key_length",
    "read_header",
]


UNK_ID = 0
BOS_ID = 1
EOS_ID = 2
BYTE_TOKEN_OFFSET = 3  # <0xXX> has id BYTE_TOKEN_OFFSET + 0xXX

DEFAULT_LOGIT_SCALE = 4.5

SPM_SPACE = "\u2581"  # "▁"

_TT_NORMAL = int(gguf.TokenType.NORMAL)
_TT_UNKNOWN = int(gguf.TokenType.UNKNOWN)
_TT_CONTROL = int(gguf.TokenType.CONTROL)
_TT_UNUSED = int(gguf.TokenType.UNUSED)
_TT_BYTE = int(gguf.TokenType.BYTE)

_SINGLE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789()[]{}:;,.=+-*/<>|_'\"#!?%&@"

_WORDS = (
    "the",
    "a",
    "an",
    "def",
    "return",
    "hello",
    "world",
    "print",
    "if",
    "else",
    "elif",
    "for",
    "in",
    "import",
    "from",
    "is",
    "of",
    "and",
    "or",
    "not",
    "to",
    "None",
    "True",
    "False",
    "self",
    "class",
    "while",
    "with",
    "as",
    "x",
    "y",
    "n",
    "i",
    "list",
    "int",
    "str",
    "len",
    "range",
    "value",
    "result",
    "user",
    "assistant",
    "system",
    "you",
    "I",
    "it",
    "this",
    "that",
    "code",
)
# Word pieces after a space without the "▁" prefix (e.g. the "world" in "hello_world").
_BARE_WORDS = ("hello", "world", "print", "return", "self", "value", "result")

# The "other" variant replaces this word piece by OTHER_VOCAB_DIFF_TEXT (same id, different text).
_OTHER_REPLACED_TEXT = SPM_SPACE + "world"
OTHER_VOCAB_DIFF_TEXT = SPM_SPACE + "earth"

SIMPLE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""A small chatml-like Jinja template. Its markers ("<|im_start|>", "<|im_end|>") are plain text in
the tiny vocabulary (they tokenize into single-character pieces), the newline uses byte fallback
(<0x0A>). Render with e.g. llama_cpp.llama_chat_format.Jinja2ChatFormatter(template=...,
eos_token="</s>", bos_token="<s>")."""


TOOLS_CHAT_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    '{{- \'\\n</tools>\\nCall a function like this:\\n<tool_call>\\n{"name": <function-name>, '
    '"arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n\' }}{%- endif %}'
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}"
    "{{- '<|im_start|>assistant' }}{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}{%- if tool_call.function is defined %}"
    "{%- set tool_call = tool_call.function %}{%- endif %}"
    '{{- \'\\n<tool_call>\\n{"name": "\' + tool_call.name + \'", "arguments": \' }}'
    "{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""SIMPLE_CHAT_TEMPLATE plus Qwen2.5's tool rendering (tools in a system turn, assistant calls as
<tool_call> blocks, results as <tool_response>), trimmed: what tools/formats.py detects as Hermes tool
support. Its markers are plain text in the tiny vocabulary, so `<tool_call>` is several tokens."""


FIM_TOKENS = (
    ("<|fim_prefix|>", "tokenizer.ggml.fim_pre_token_id"),
    ("<|fim_suffix|>", "tokenizer.ggml.fim_suf_token_id"),
    ("<|fim_middle|>", "tokenizer.ggml.fim_mid_token_id"),
    ("<|fim_pad|>", "tokenizer.ggml.fim_pad_token_id"),
    ("<|repo_name|>", "tokenizer.ggml.fim_rep_token_id"),
    ("<|file_sep|>", "tokenizer.ggml.fim_sep_token_id"),
)
"""Fill-in-the-middle tokens as Qwen2.5-Coder names them, and the GGUF key of each id: write_tiny_llama(...,
fim=True) appends them (CONTROL) after the shared vocabulary, in this order."""


def _base_tokens() -> list[tuple[str, float, int]]:
    toks: list[tuple[str, float, int]] = [
        ("<unk>", 0.0, _TT_UNKNOWN),
        ("<s>", 0.0, _TT_CONTROL),
        ("</s>", 0.0, _TT_CONTROL),
    ]
    toks += [(f"<0x{b:02X}>", 0.0, _TT_BYTE) for b in range(256)]
    seen = {t for t, _, _ in toks}

    def add(text: str, score: float) -> None:
        if text not in seen:
            seen.add(text)
            toks.append((text, score, _TT_NORMAL))

    add(SPM_SPACE, -1.0)
    for ch in _SINGLE_CHARS:
        add(ch, -1.0)
    # Runs of spaces (code indentation): "▁▁", "▁▁▁", "▁▁▁▁".
    for k in range(2, 5):
        add(SPM_SPACE * k, float(k))
    for w in _WORDS:
        piece = SPM_SPACE + w
        for k in range(2, len(piece) + 1):
            # Longer pieces score higher, so the bigram merger prefers them.
            add(piece[:k], float(k))
    for w in _BARE_WORDS:
        for k in range(2, len(w) + 1):
            add(w[:k], float(k) - 0.5)
    return toks


_BASE_TOKENS = _base_tokens()
BASE_VOCAB_SIZE = len(_BASE_TOKENS)
"""Vocabulary size of write_tiny_llama(..., n_vocab=None, extra_pad_tokens=0)."""

OTHER_VOCAB_DIFF_ID = [t for t, _, _ in _BASE_TOKENS].index(_OTHER_REPLACED_TEXT)
"""The only id where vocab_variant="other" differs from "base" (375): base "▁world", other "▁earth"."""
assert OTHER_VOCAB_DIFF_ID == 375, OTHER_VOCAB_DIFF_ID  # keep the documented value in sync


def build_vocab(
    vocab_variant: str = "base", n_vocab: int | None = None, extra_pad_tokens: int = 0
) -> list[tuple[str, float, int]]:
    """Return the vocabulary as a list of (text, score, token_type), index = token id.

    vocab_variant: "base", or "other" (same as base except id OTHER_VOCAB_DIFF_ID, which holds
    OTHER_VOCAB_DIFF_TEXT instead of "▁world").
    n_vocab: size of the shared vocabulary (None = BASE_VOCAB_SIZE); larger sizes append filler
    tokens "▁tokNNNN" (NNNN = id) that are part of the shared text.
    extra_pad_tokens: k padding tokens "[PAD0]".."[PAD{k-1}]" (UNUSED) appended after the shared
    vocabulary; the total vocabulary is n_vocab + k.
    """
    if vocab_variant not in ("base", "other"):
        raise ValueError(f"vocab_variant must be 'base' or 'other', got {vocab_variant!r}")
    if n_vocab is None:
        n_vocab = BASE_VOCAB_SIZE
    if n_vocab < BASE_VOCAB_SIZE:
        raise ValueError(f"n_vocab must be >= {BASE_VOCAB_SIZE}, got {n_vocab}")
    if extra_pad_tokens < 0:
        raise ValueError("extra_pad_tokens must be >= 0")
    toks = list(_BASE_TOKENS)
    if vocab_variant == "other":
        _, score, tt = toks[OTHER_VOCAB_DIFF_ID]
        toks[OTHER_VOCAB_DIFF_ID] = (OTHER_VOCAB_DIFF_TEXT, score, tt)
    for i in range(BASE_VOCAB_SIZE, n_vocab):
        toks.append((f"{SPM_SPACE}tok{i:04d}", -10.0, _TT_NORMAL))
    for k in range(extra_pad_tokens):
        toks.append((f"[PAD{k}]", -1000.0, _TT_UNUSED))
    return toks


@dataclass(frozen=True)
class TinyTokenizer:
    """Any tokenizer for write_tiny_llama (tests/gguf_vocabularies.py builds BPE and SentencePiece ones):
    ``tokens`` as (text, score, GGUF token type), ``model`` = tokenizer.ggml.model ("llama" or "gpt2"),
    ``merges`` for gpt2, ``pre`` = tokenizer.ggml.pre, special ids (None = not written)."""

    tokens: list[tuple[str, float, int]]
    model: str = "llama"
    merges: list[str] = field(default_factory=list)
    pre: str | None = None
    bos: int | None = BOS_ID
    eos: int | None = EOS_ID
    unk: int | None = UNK_ID
    eot: int | None = None
    add_bos: bool = True
    add_space_prefix: bool | None = True


def write_tiny_llama(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_vocab: int | None = None,
    n_embd: int = 32,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 64,
    n_ctx_train: int = 512,
    logit_scale: float = DEFAULT_LOGIT_SCALE,
    vocab_variant: str = "base",
    extra_pad_tokens: int = 0,
    chat_template: str | None = None,
    tokenizer: TinyTokenizer | None = None,
    fim: bool = False,
    row_order: list[int] | None = None,
) -> pathlib.Path:
    """Write a tiny random-weight llama-architecture GGUF model (all F32) to ``path``.

    See the module docstring for the vocabulary and weight layout. The shared vocabulary has
    ``n_vocab`` tokens (default BASE_VOCAB_SIZE), the whole model ``n_vocab + extra_pad_tokens``.
    ``logit_scale`` is the standard deviation of the logits over the vocabulary at any position
    (larger = more peaked). ``chat_template`` is stored as ``tokenizer.chat_template`` if given
    (see SIMPLE_CHAT_TEMPLATE). ``tokenizer`` replaces the vocabulary and tokenizer settings
    altogether (then ``n_vocab``, ``vocab_variant`` and ``extra_pad_tokens`` must stay at their
    defaults). ``fim`` appends FIM_TOKENS to the shared vocabulary (before any pad tokens) and writes
    their ids under the GGUF keys llama.cpp reads. ``row_order`` permutes the rows of the embedding and
    output matrices (row i of the file is row row_order[i] of the unpermuted model): with the tokens of
    a ``tokenizer`` permuted the same way, the model writes the same texts with the same probabilities
    at other ids (tests/test_cross_vocab.py). Returns the path as a pathlib.Path.
    """
    path = pathlib.Path(path)
    if n_embd % n_head:
        raise ValueError("n_embd must be a multiple of n_head")
    head_dim = n_embd // n_head
    if head_dim % 2:
        raise ValueError("head dimension (n_embd / n_head) must be even for RoPE")
    if n_head % n_head_kv:
        raise ValueError("n_head must be a multiple of n_head_kv")

    if tokenizer is not None and (n_vocab is not None or vocab_variant != "base" or extra_pad_tokens):
        raise ValueError("tokenizer= replaces n_vocab, vocab_variant and extra_pad_tokens")
    if tokenizer is None:
        tokenizer = TinyTokenizer(build_vocab(vocab_variant, n_vocab, extra_pad_tokens))
    vocab = tokenizer.tokens
    fim_ids: list[tuple[str, int]] = []
    if fim:
        at = len(vocab) - extra_pad_tokens
        fim_ids = [(key, at + i) for i, (_, key) in enumerate(FIM_TOKENS)]
        vocab = [*vocab[:at], *((text, 0.0, _TT_CONTROL) for text, _ in FIM_TOKENS), *vocab[at:]]
    n_shared = len(vocab) - extra_pad_tokens
    n_kv = n_head_kv * head_dim

    rng = np.random.default_rng(seed)
    pad_rng = np.random.default_rng([seed, 0x9AD])

    def normal(shape: tuple[int, ...], std: float, gen: np.random.Generator = rng) -> np.ndarray:
        return (gen.standard_normal(shape) * std).astype(np.float32)

    # numpy shapes are (rows = output features, cols = input features); ggml ne is the reverse.
    tok_embd = normal((n_shared, n_embd), 1.0)
    layers = []
    for _ in range(n_layer):
        layers.append(
            {
                "attn_q": normal((n_embd, n_embd), 1.0 / np.sqrt(n_embd)),
                "attn_k": normal((n_kv, n_embd), 1.0 / np.sqrt(n_embd)),
                "attn_v": normal((n_kv, n_embd), 1.0 / np.sqrt(n_embd)),
                # Attention mixes context in; give it a weight comparable to the token embedding.
                "attn_output": normal((n_embd, n_embd), 1.5 / np.sqrt(n_embd)),
                "ffn_gate": normal((n_ff, n_embd), 1.0 / np.sqrt(n_embd)),
                "ffn_up": normal((n_ff, n_embd), 1.0 / np.sqrt(n_embd)),
                "ffn_down": normal((n_embd, n_ff), 1.0 / np.sqrt(n_ff)),
            }
        )
    output = normal((n_shared, n_embd), logit_scale / np.sqrt(n_embd))
    if row_order is not None:
        if sorted(row_order) != list(range(n_shared)):
            raise ValueError(f"row_order must be a permutation of range({n_shared})")
        tok_embd, output = tok_embd[row_order], output[row_order]
    if extra_pad_tokens:
        tok_embd = np.concatenate([tok_embd, normal((extra_pad_tokens, n_embd), 1.0, pad_rng)])
        output = np.concatenate([output, normal((extra_pad_tokens, n_embd), logit_scale / np.sqrt(n_embd), pad_rng)])

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"tiny-llama-s{seed}-{vocab_variant}")
    w.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(vocab))

    w.add_tokenizer_model(tokenizer.model)
    if tokenizer.pre is not None:
        w.add_tokenizer_pre(tokenizer.pre)
    w.add_token_list([t for t, _, _ in vocab])
    w.add_token_scores([s for _, s, _ in vocab])
    w.add_token_types([tt for _, _, tt in vocab])
    if tokenizer.merges:
        w.add_token_merges(tokenizer.merges)
    for add_id, token_id in (
        (w.add_unk_token_id, tokenizer.unk),
        (w.add_bos_token_id, tokenizer.bos),
        (w.add_eos_token_id, tokenizer.eos),
        (w.add_eot_token_id, tokenizer.eot),
    ):
        if token_id is not None:
            add_id(token_id)
    for key, token_id in fim_ids:
        w.add_uint32(key, token_id)
    w.add_add_bos_token(tokenizer.add_bos)
    w.add_add_eos_token(False)
    if tokenizer.add_space_prefix is not None:
        w.add_add_space_prefix(tokenizer.add_space_prefix)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    ones = np.ones(n_embd, dtype=np.float32)
    w.add_tensor("token_embd.weight", tok_embd)
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", output)
    for i, lw in enumerate(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        for name, arr in lw.items():
            w.add_tensor(f"blk.{i}.{name}.weight", arr)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ----------------------------------------------------------------------------------------------
# Broken files. GGUF header: magic b"GGUF" (4 bytes), version uint32 LE (offset 4), tensor count
# uint64 LE (offset 8), KV count uint64 LE (offset 16); the first KV pair starts at offset 24 with
# its key length (uint64 LE) followed by the key bytes.
# NOTE: llama.cpp may abort the whole process (rather than return an error) on malformed files;
# only hand these to llama.cpp in a subprocess, or validate them before loading. (Observed with
# llama-cpp-python 0.3.36, in a subprocess: every helper below, with the default arguments and a
# default tiny model as src, makes Llama(...) raise ValueError "Failed to load model from file",
# with and without vocab_only=True. Do not rely on that.)

GGUF_MAGIC_BYTES = b"GGUF"
HEADER_VERSION_OFFSET = 4
HEADER_TENSOR_COUNT_OFFSET = 8
HEADER_KV_COUNT_OFFSET = 16
HEADER_SIZE = 24
HUGE_COUNT = 0x7FFF_FFFF_FFFF_FFF0
"""The value the write_huge_* helpers store: far beyond any real file, fits in int64."""


def read_header(path: str | os.PathLike[str]) -> dict:
    """Parse the 24-byte GGUF header (no validation): magic, version, n_tensors, n_kv."""
    with open(path, "rb") as f:
        head = f.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE:
        raise ValueError(f"{path}: only {len(head)} bytes, a GGUF header has {HEADER_SIZE}")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", head, 4)
    return {"magic": head[:4], "version": version, "n_tensors": n_tensors, "n_kv": n_kv}


def _patched_copy(src, dst, offset: int, data: bytes) -> pathlib.Path:
    buf = bytearray(pathlib.Path(src).read_bytes())
    if len(buf) < offset + len(data):
        raise ValueError(f"{src} is too short to patch at offset {offset}")
    buf[offset : offset + len(data)] = data
    dst = pathlib.Path(dst)
    dst.write_bytes(bytes(buf))
    return dst


def write_truncated(src, dst, fraction: float = 0.5) -> pathlib.Path:
    """Copy the first ``int(size * fraction)`` bytes of the GGUF file ``src`` to ``dst``.

    The header is intact (for fraction large enough) but tensor data (or, for small fractions,
    metadata) is missing: a file cut short by an interrupted download.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError("fraction must be in [0, 1)")
    data = pathlib.Path(src).read_bytes()
    dst = pathlib.Path(dst)
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def write_random_bytes(dst, n: int = 4096, seed: int = 0) -> pathlib.Path:
    """Write ``n`` random bytes (np.random.default_rng(seed)) that do NOT start with b"GGUF":
    a file that is not GGUF at all."""
    data = bytearray(np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes())
    if data[:4] == GGUF_MAGIC_BYTES[: len(data[:4])] and n > 0:
        data[0] ^= 0xFF
    dst = pathlib.Path(dst)
    dst.write_bytes(bytes(data))
    return dst


def write_empty(dst) -> pathlib.Path:
    """Write a zero-byte file."""
    dst = pathlib.Path(dst)
    dst.write_bytes(b"")
    return dst


def write_bad_magic(src, dst, magic: bytes = b"GGUX") -> pathlib.Path:
    """Copy ``src`` with its 4-byte magic replaced by ``magic`` (default b"GGUX"); rest intact."""
    if len(magic) != 4 or magic == GGUF_MAGIC_BYTES:
        raise ValueError("magic must be 4 bytes and differ from b'GGUF'")
    return _patched_copy(src, dst, 0, magic)


def write_bad_version(src, dst, version: int = 999) -> pathlib.Path:
    """Copy ``src`` with the GGUF version field (uint32 at offset 4, normally 3) set to ``version``.
    Use version=0 or 1 for "too old", 999 (default) for "unsupported future version"."""
    return _patched_copy(src, dst, HEADER_VERSION_OFFSET, struct.pack("<I", version))


def write_huge_tensor_count(src, dst, count: int = HUGE_COUNT) -> pathlib.Path:
    """Copy ``src`` with the tensor-count field (uint64 at offset 8) set to ``count`` (default
    HUGE_COUNT): a reader that trusts it would try to allocate/parse ~2**63 tensor infos."""
    return _patched_copy(src, dst, HEADER_TENSOR_COUNT_OFFSET, struct.pack("<Q", count))


def write_huge_kv_count(src, dst, count: int = HUGE_COUNT) -> pathlib.Path:
    """Copy ``src`` with the metadata KV-count field (uint64 at offset 16) set to ``count``
    (default HUGE_COUNT): parsing runs off the end of the metadata."""
    return _patched_copy(src, dst, HEADER_KV_COUNT_OFFSET, struct.pack("<Q", count))


def write_huge_key_length(src, dst, length: int = HUGE_COUNT) -> pathlib.Path:
    """Copy ``src`` with the length of the first metadata key (uint64 at offset 24, normally
    len("general.architecture") = 20) set to ``length``: a string that runs past the end of file
    (a reader that trusts it would try to allocate ``length`` bytes)."""
    return _patched_copy(src, dst, HEADER_SIZE, struct.pack("<Q", length))
