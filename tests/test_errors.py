"""Bad input raises a typed exception with a clear message, and the process (and ensemble) survive."""

import math

import pytest
from gguf_factory import (
    OTHER_VOCAB_DIFF_ID,
    write_bad_magic,
    write_bad_version,
    write_empty,
    write_huge_key_length,
    write_huge_kv_count,
    write_huge_tensor_count,
    write_random_bytes,
    write_truncated,
)

from edge_specens import ContextOverflowError, Ensemble, InvalidParameterError, ModelLoadError, VocabularyMismatchError


@pytest.fixture(scope="module")
def broken(tiny_models, tmp_path_factory):
    d = tmp_path_factory.mktemp("broken")
    src = tiny_models["small"]
    text = d / "notes.gguf"
    text.write_text("this is not a model\n")
    return {
        "missing": d / "missing.gguf",
        "empty": write_empty(d / "empty.gguf"),
        "random": write_random_bytes(d / "random.gguf"),
        "text": text,
        "truncated": write_truncated(src, d / "truncated.gguf", 0.5),
        "truncated_header": write_truncated(src, d / "trunc_head.gguf", 0.001),
        "bad_magic": write_bad_magic(src, d / "magic.gguf"),
        "bad_version": write_bad_version(src, d / "version.gguf"),
        "huge_tensors": write_huge_tensor_count(src, d / "tensors.gguf"),
        "huge_kv": write_huge_kv_count(src, d / "kv.gguf"),
        "huge_key": write_huge_key_length(src, d / "key.gguf"),
        "directory": d,
    }


@pytest.mark.parametrize(
    "kind,words",
    [
        ("missing", "not found"),
        ("empty", "empty"),
        ("random", "magic"),
        ("text", "magic"),
        ("truncated", "truncated"),
        ("truncated_header", "truncated"),
        ("bad_magic", "magic"),
        ("bad_version", "version"),
        ("huge_tensors", "implausible"),
        ("huge_kv", "implausible"),
        ("huge_key", "beyond"),
        ("directory", "not a regular file"),
    ],
)
def test_bad_model_files(broken, tiny_models, duo, kind, words):
    with pytest.raises(ModelLoadError) as e:
        Ensemble.from_paths([tiny_models["small"], broken[kind]])
    assert words in str(e.value) and str(broken[kind].name) in str(e.value)
    assert len(duo.generate("hello", max_tokens=3, temperature=0).tokens) == 3  # the process is fine


def test_vocabulary_mismatch_names_both_files_and_the_id(tiny_models):
    """vocab="shared" refuses members whose vocabularies differ (by default the other one follows the
    primary's vocabulary: tests/test_cross_vocab.py)."""
    with pytest.raises(VocabularyMismatchError) as e:
        Ensemble.from_paths([tiny_models["small"], tiny_models["other"]], vocab="shared")
    msg = str(e.value)
    assert "small.gguf" in msg and "other.gguf" in msg and f"token id {OTHER_VOCAB_DIFF_ID}" in msg


def test_padded_vocabulary_is_accepted_and_cut_to_the_common_size(tiny_models):
    ens = Ensemble.from_paths([tiny_models["small"], tiny_models["padded"]])
    try:
        assert ens.n_vocab == ens.members[0].n_vocab < ens.members[1].n_vocab
        res = ens.generate("hello", max_tokens=30, temperature=1.0, seed=1, strategy="se", gamma=[3, 1])
        assert all(t < ens.n_vocab for t in res.tokens)
    finally:
        ens.close()


@pytest.mark.parametrize(
    "kw,words",
    [
        ({"weights": [1.0]}, "1 weights for 2"),
        ({"weights": [0.5, 0.3, 0.2]}, "3 weights for 2"),
        ({"weights": [-0.5, 1.5]}, ">= 0"),
        ({"weights": [0.0, 0.0]}, "all be zero"),
        ({"weights": [math.nan, 1.0]}, "finite"),
        ({"weights": [math.inf, 1.0]}, "finite"),
        ({"method": "cd", "mu": -1.0}, "mu"),
        ({"method": "cd", "mu": math.nan}, "mu"),
        ({"method": "xx"}, "unknown method"),
        ({"gamma": 0}, "gamma"),
        ({"gamma": [2, 0]}, "gamma"),
        ({"gamma": [2, 1, 1]}, "3 values for 2"),
        ({"n_ctx": 0}, "n_ctx"),
    ],
)
def test_bad_ensemble_parameters(tiny_models, kw, words):
    with pytest.raises(InvalidParameterError, match=words):
        Ensemble.from_paths([tiny_models["small"], tiny_models["big"]], **kw)


@pytest.mark.parametrize(
    "kw,words",
    [
        ({"strategy": "fastest"}, "unknown strategy"),
        ({"strategy": "se", "gamma": 0}, "gamma"),
        ({"strategy": "se", "gamma": [1, -2]}, "gamma"),
        ({"strategy": "single:7"}, "out of range"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": -0.1}, "min_p"),
        ({"top_k": -1}, "top_k"),
        ({"seed": -1}, "seed"),
        ({"stop": [1, 2]}, "stop"),
    ],
)
def test_bad_generation_parameters(duo, kw, words):
    with pytest.raises(InvalidParameterError, match=words):
        duo.generate("hello", **kw)
    assert (
        len(duo.generate("hello", max_tokens=2, temperature=0).tokens) == 2
    )  # greedy: an unseeded sample could end at EOS


@pytest.mark.parametrize(
    "prompt,words", [("", "empty"), ([], "empty"), ([10**7], "outside the vocabulary"), (3.5, "prompt must be")]
)
def test_bad_prompts(duo, prompt, words):
    with pytest.raises(InvalidParameterError, match=words):
        duo.generate(prompt, max_tokens=2)


def test_prompt_longer_than_context(duo):
    with pytest.raises(ContextOverflowError, match="context"):
        duo.generate([5, 6] * 300, max_tokens=2)
    assert len(duo.generate("hello", max_tokens=2, temperature=0).tokens) == 2
