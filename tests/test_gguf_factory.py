"""Tests for tests/gguf_factory.py: tiny GGUF models load and behave in llama.cpp, broken files are
broken in exactly the documented way (those are never handed to llama.cpp here: it may abort)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import gguf_factory as gf
import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")

SPM = "\u2581"


def _load(path, **kw) -> llama_cpp.Llama:
    kw.setdefault("n_ctx", 256)
    return llama_cpp.Llama(str(path), logits_all=False, verbose=False, n_threads=2, **kw)


def _last_logits(llm, tokens) -> np.ndarray:
    """Logits at the last position after evaluating ``tokens`` from an empty cache."""
    llm.reset()
    llm.eval(tokens)
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float64).copy()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _texts(llm, n: int) -> list[str]:
    return [llm._model.token_get_text(i) for i in range(n)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    t0 = time.perf_counter()
    paths = {
        "s0": gf.write_tiny_llama(d / "s0.gguf", seed=0, chat_template=gf.SIMPLE_CHAT_TEMPLATE),
        "s1": gf.write_tiny_llama(d / "s1.gguf", seed=1),
        "other": gf.write_tiny_llama(d / "other.gguf", seed=0, vocab_variant="other"),
        "pad": gf.write_tiny_llama(d / "pad.gguf", seed=0, extra_pad_tokens=7),
    }
    paths["build_seconds"] = (time.perf_counter() - t0) / 4
    return paths


@pytest.fixture(scope="module")
def llm0(models):
    return _load(models["s0"])


def test_build_fast_deterministic_and_sized(models, tmp_path):
    assert models["build_seconds"] < 0.5
    a = gf.write_tiny_llama(tmp_path / "a.gguf", seed=3)
    b = gf.write_tiny_llama(tmp_path / "b.gguf", seed=3)
    assert isinstance(a, Path) and a.read_bytes() == b.read_bytes()
    assert a.stat().st_size < 1_000_000
    hdr = gf.read_header(a)
    assert hdr["magic"] == b"GGUF" and hdr["version"] == 3
    assert hdr["n_tensors"] == 3 + 9 * 2  # embd, output_norm, output + 9 per layer
    big = gf.write_tiny_llama(tmp_path / "big.gguf", n_vocab=gf.BASE_VOCAB_SIZE + 100, n_layer=3)
    llm = _load(big, vocab_only=True)
    assert llm.n_vocab() == gf.BASE_VOCAB_SIZE + 100
    with pytest.raises(ValueError):
        gf.write_tiny_llama(tmp_path / "x.gguf", n_vocab=10)
    with pytest.raises(ValueError):
        gf.write_tiny_llama(tmp_path / "x.gguf", vocab_variant="nope")


def test_tokenizer_roundtrip_and_metadata(llm0):
    assert llm0.n_vocab() == gf.BASE_VOCAB_SIZE
    assert llm0.token_bos() == gf.BOS_ID == 1 and llm0.token_eos() == gf.EOS_ID == 2
    vocab = [t for t, _, _ in gf.build_vocab()]
    assert _texts(llm0, gf.BASE_VOCAB_SIZE) == vocab
    toks = llm0.tokenize(b"hello world")
    assert toks == [gf.BOS_ID, vocab.index(SPM + "hello"), vocab.index(SPM + "world")]
    assert llm0.detokenize(toks) == b"hello world"
    code = b"def f(x):\n    return x + 1\nprint(f(2))"
    toks = llm0.tokenize(code, add_bos=False)
    assert gf.UNK_ID not in toks
    assert llm0.detokenize(toks).lstrip(b" ") == code
    # Non-ASCII text falls back to byte tokens and round-trips.
    text = "héllo wörld €".encode()
    assert llm0.detokenize(llm0.tokenize(text)) == text
    md = llm0.metadata
    assert md["general.architecture"] == "llama"
    assert md["tokenizer.ggml.model"] == "llama"
    assert md["tokenizer.chat_template"] == gf.SIMPLE_CHAT_TEMPLATE


def test_chat_template_renders_and_tokenizes(llm0):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    fmt = Jinja2ChatFormatter(template=gf.SIMPLE_CHAT_TEMPLATE, eos_token="</s>", bos_token="<s>")
    res = fmt(messages=[{"role": "user", "content": "hello world"}])
    assert res.prompt == "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n"
    toks = llm0.tokenize(res.prompt.encode())
    assert gf.UNK_ID not in toks
    assert llm0.detokenize(toks).decode() == res.prompt


def test_eval_gives_finite_context_dependent_logits(llm0):
    toks = llm0.tokenize(b"hello world")
    lg = _last_logits(llm0, toks)
    assert lg.shape == (gf.BASE_VOCAB_SIZE,)
    assert np.all(np.isfinite(lg)) and lg.std() > 1.0
    # Deterministic.
    assert np.array_equal(lg, _last_logits(llm0, toks))
    # Same last token, different earlier context -> a different distribution.
    p1 = _softmax(_last_logits(llm0, llm0.tokenize(b"def print world")))
    p2 = _softmax(_last_logits(llm0, llm0.tokenize(b"the return if x world")))
    assert 0.5 * np.abs(p1 - p2).sum() > 0.05
    # Low-level decode path (what the runtime uses), logits for the last row only.
    ctx = llm0.ctx
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    batch = llama_cpp.llama_batch_init(len(toks), 0, 1)
    try:
        batch.n_tokens = len(toks)
        for i, t in enumerate(toks):
            batch.token[i] = t
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i == len(toks) - 1
        assert llama_cpp.llama_decode(ctx, batch) == 0
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx), shape=(gf.BASE_VOCAB_SIZE,))
        np.testing.assert_allclose(row, lg, rtol=0, atol=1e-3)
    finally:
        llama_cpp.llama_batch_free(batch)
        llm0.reset()


def test_seeds_give_different_models(models, llm0):
    llm1 = _load(models["s1"])
    toks = llm0.tokenize(b"hello world")
    assert llm1.tokenize(b"hello world") == toks
    p0 = _softmax(_last_logits(llm0, toks))
    p1 = _softmax(_last_logits(llm1, toks))
    assert 0.5 * np.abs(p0 - p1).sum() > 0.3


def test_other_vocab_differs_at_documented_id(models):
    base = _texts(_load(models["s0"], vocab_only=True), gf.BASE_VOCAB_SIZE)
    other_llm = _load(models["other"], vocab_only=True)
    assert other_llm.n_vocab() == gf.BASE_VOCAB_SIZE
    other = _texts(other_llm, gf.BASE_VOCAB_SIZE)
    diff = [i for i, (a, b) in enumerate(zip(base, other)) if a != b]
    assert diff == [gf.OTHER_VOCAB_DIFF_ID]
    assert base[gf.OTHER_VOCAB_DIFF_ID] == SPM + "world"
    assert other[gf.OTHER_VOCAB_DIFF_ID] == gf.OTHER_VOCAB_DIFF_TEXT


def test_padded_vocab_shares_text_and_logits(models, llm0):
    pad = _load(models["pad"])
    n = gf.BASE_VOCAB_SIZE
    assert pad.n_vocab() == n + 7
    texts = _texts(pad, n + 7)
    assert texts[:n] == _texts(llm0, n)
    assert texts[n:] == [f"[PAD{k}]" for k in range(7)]
    toks = llm0.tokenize(b"print hello world")
    assert pad.tokenize(b"print hello world") == toks
    # Same seed: identical weights on the shared ids, so identical logits there.
    np.testing.assert_allclose(_last_logits(pad, toks)[:n], _last_logits(llm0, toks), atol=1e-4)


def test_distributions_are_peaked_but_not_one_hot(llm0):
    prompts = [b"hello world", b"def f(x):", b"print the", b"return a", b"1 2 3", b"if x is None"]
    top5, top1 = [], []
    for pr in prompts:
        toks = llm0.tokenize(pr)
        # The prompt itself plus a few greedy continuations (contexts the sampler would meet).
        for _ in range(3):
            p = np.sort(_softmax(_last_logits(llm0, toks)))[::-1]
            top5.append(p[:5].sum())
            top1.append(p[0])
            toks = toks + [int(np.argmax(_last_logits(llm0, toks)))]
    assert np.median(top5) > 0.7
    assert np.median(top1) < 0.9
    assert np.mean(np.array(top1) > 0.999) < 0.2


# ----------------------------------------------------------------------------------------------
# Broken files: byte-level checks only.


@pytest.fixture(scope="module")
def src(models):
    return models["s0"]


def test_truncated(src, tmp_path):
    data = src.read_bytes()
    out = gf.write_truncated(src, tmp_path / "t.gguf")
    assert out.read_bytes() == data[: len(data) // 2]
    out = gf.write_truncated(src, tmp_path / "t2.gguf", fraction=0.01)
    assert out.read_bytes() == data[: int(len(data) * 0.01)]
    assert out.read_bytes()[:4] == b"GGUF"


def test_random_empty_and_bad_magic(src, tmp_path):
    r = gf.write_random_bytes(tmp_path / "r.bin", 1000)
    assert r.stat().st_size == 1000 and r.read_bytes()[:4] != b"GGUF"
    assert gf.write_random_bytes(tmp_path / "r2.bin", 1000).read_bytes() == r.read_bytes()
    e = gf.write_empty(tmp_path / "e.gguf")
    assert e.stat().st_size == 0
    data = src.read_bytes()
    m = gf.write_bad_magic(src, tmp_path / "m.gguf")
    md = m.read_bytes()
    assert md[:4] == b"GGUX" and md[4:] == data[4:]
    with pytest.raises(ValueError):
        gf.read_header(e)


@pytest.mark.parametrize(
    "fn, offset, fmt, value",
    [
        (gf.write_bad_version, gf.HEADER_VERSION_OFFSET, "<I", 999),
        (gf.write_huge_tensor_count, gf.HEADER_TENSOR_COUNT_OFFSET, "<Q", gf.HUGE_COUNT),
        (gf.write_huge_kv_count, gf.HEADER_KV_COUNT_OFFSET, "<Q", gf.HUGE_COUNT),
        (gf.write_huge_key_length, gf.HEADER_SIZE, "<Q", gf.HUGE_COUNT),
    ],
)
def test_header_corruptions(src, tmp_path, fn, offset, fmt, value):
    data = src.read_bytes()
    size = struct.calcsize(fmt)
    # Sanity: the field really is where we think it is in the original file.
    orig = struct.unpack_from(fmt, data, offset)[0]
    hdr = gf.read_header(src)
    assert (
        orig
        == {
            gf.HEADER_VERSION_OFFSET: hdr["version"],
            gf.HEADER_TENSOR_COUNT_OFFSET: hdr["n_tensors"],
            gf.HEADER_KV_COUNT_OFFSET: hdr["n_kv"],
            gf.HEADER_SIZE: len("general.architecture"),
        }[offset]
    )
    out = fn(src, tmp_path / "c.gguf").read_bytes()
    assert len(out) == len(data)
    assert struct.unpack_from(fmt, out, offset)[0] == value != orig
    assert out[:offset] == data[:offset] and out[offset + size :] == data[offset + size :]
