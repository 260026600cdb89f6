"""The vocabulary package: token bytes as llama.cpp writes them, the padding rule, the fixed pushforward
map F_k, the incremental text follower and the header-only mapping report (docs/design.md §2).

Synthetic vocabularies (random byte pieces, GPT-2 and SentencePiece spellings, missing bytes, partial
UTF-8 tokens) check the properties the decode loop will rely on; tiny GGUF models check the byte
tables and end-of-generation sets against llama.cpp itself, and reproduce the strict-prefix crash.
"""

from __future__ import annotations

import ctypes

import gguf_factory as gf
import gguf_vocabularies as gv
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_specens.errors import VocabularyMismatchError
from edge_specens.gguf_header import validate_gguf
from edge_specens.vocabulary import (
    UNMAPPED,
    CheckedTokenizer,
    GreedySegmenter,
    Pushforward,
    TextFollower,
    TokenTable,
    common_vocab_size,
    complete_prefix,
    gpt2_byte_of_char,
    gpt2_decode,
    report,
)
from edge_specens.vocabulary.pieces import A_CONTROL, A_NORMAL, A_UNUSED, BYTE, CONTROL, NORMAL, UNUSED, USER_DEFINED

SPACE = "\u2581"
CHAR_OF_BYTE = {b: c for c, b in gpt2_byte_of_char().items()}


def bpe_text(piece: bytes) -> str:
    """How a GPT-2 byte-level vocabulary spells `piece`."""
    return "".join(CHAR_OF_BYTE[b] for b in piece)


def table(pieces, model="gpt2", specials=(("<|im_end|>", CONTROL),), name="t", drop_bytes=(), eog=None):
    """A synthetic vocabulary: every single byte (but `drop_bytes`), then `pieces`, then `specials`."""
    texts, types = [], []
    for b in range(256):
        if b in drop_bytes:
            continue
        if model == "llama":
            texts.append(f"<0x{b:02X}>")
            types.append(BYTE)
        else:
            texts.append(bpe_text(bytes([b])))
            types.append(NORMAL)
    seen = set(texts)
    for p in pieces:
        if model == "llama":
            try:
                text = p.decode("utf-8").replace(" ", SPACE)
            except UnicodeDecodeError:
                continue  # SentencePiece text tokens are whole characters
        else:
            text = bpe_text(p)
        if text not in seen:
            seen.add(text)
            texts.append(text)
            types.append(NORMAL)
    for text, tt in specials:
        texts.append(text)
        types.append(tt)
    eos = {"tokenizer.ggml.eos_token_id": len(texts) - len(specials)} if specials else {}
    return TokenTable.build(texts, types, model=model, name=name, metadata=eos, eog=eog)


def text_ids(t: TokenTable) -> list[int]:
    return [i for i, p in enumerate(t.pieces) if p]


def written(t: TokenTable, tokens) -> bytes:
    return b"".join(t.pieces[u] or b"" for u in tokens)


# ------------------------------------------------------------------------------------ token bytes
def test_gpt2_table_is_the_byte_level_table():
    table_ = gpt2_byte_of_char()
    assert sorted(table_.values()) == list(range(256))
    assert table_["Ġ"] == 0x20 and table_["Ċ"] == 0x0A and table_["a"] == ord("a") and table_["ĉ"] == 0x09
    assert gpt2_decode("ĠhelloĊ".encode()) == b" hello\n"
    assert gpt2_decode(bpe_text("中".encode()[:2]).encode()) == "中".encode()[:2]  # a partial character
    assert gpt2_decode(b"a b") == b"a[UNK_BYTE_0x20a b]b"  # llama.cpp's spelling of a char outside the table


def test_pieces_of_each_token_kind():
    spm = TokenTable.build(
        ["<unk>", "<s>", "</s>", "<0x0A>", f"{SPACE}hello", "<think>", "[PAD0]", "<|im_end|>", "<unused3>"],
        [2, CONTROL, CONTROL, BYTE, NORMAL, USER_DEFINED, UNUSED, NORMAL, CONTROL],
        model="llama",
    )
    assert spm.pieces == (None, None, None, b"\n", b" hello", b"<think>", None, None, None)
    # llama.cpp's load-time corrections: an end-of-generation text is a control token, "unused" is unused
    assert spm.attrs[7] == A_NORMAL | A_CONTROL and 7 in spm.eog and spm.attrs[8] == A_CONTROL | A_UNUSED
    assert spm.eog == {2, 7} and spm.eot == 7 and spm.bos == 1
    assert [spm.is_padding(i) for i in range(len(spm))] == [False] * 6 + [True, False, True]
    # only a bare unused token is beyond the tokenizer: "<unused3>" is parsed out of text as a control token
    assert [spm.can_produce(i) for i in range(len(spm))] == [True] * 6 + [False, True, True]
    bpe = TokenTable.build(["Ġworld", "ä¸", "<|endoftext|>"], [NORMAL, NORMAL, CONTROL], model="gpt2")
    assert bpe.pieces == (b" world", "中".encode()[:2], None)
    with pytest.raises(ValueError, match="rwkv"):
        TokenTable.build(["a"], [NORMAL], model="rwkv").pieces  # noqa: B018


def test_by_bytes_prefers_the_token_a_tokenizer_produces():
    t = TokenTable.build(["<0x20>", SPACE, "<0x61>", "a"], [BYTE, NORMAL, BYTE, NORMAL], model="llama")
    assert t.by_bytes == {b" ": 1, b"a": 3} and t.byte_tokens == {0x20: 1, 0x61: 3}


def test_header_keeps_token_types(tmp_path):
    path = gf.write_tiny_llama(tmp_path / "x.gguf", tokenizer=gv.spm_tokenizer())
    info = validate_gguf(path, read_tokens=True)
    types = [tt for _, _, tt in gv.spm_tokenizer().tokens]
    assert info.token_types == types and len(info.tokens) == info.n_vocab == len(types)
    assert validate_gguf(path).token_types is None  # only when asked for


llama_cpp_marks = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def tiny_vocabs(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocabs")
    return {
        "spm": gf.write_tiny_llama(d / "spm.gguf", seed=1),
        "spm_extras": gf.write_tiny_llama(d / "spm_extras.gguf", seed=2, tokenizer=gv.spm_tokenizer()),
        "bpe": gf.write_tiny_llama(d / "bpe.gguf", seed=3, tokenizer=gv.bpe_tokenizer()),
        "extra_words": gf.write_tiny_llama(d / "extra_words.gguf", seed=4, tokenizer=gv.spm_with_extra_words()),
    }


def _vocab_only(path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp, llama_cpp.Llama(str(path), vocab_only=True, verbose=False)


@pytest.mark.parametrize("kind", ["spm", "spm_extras", "bpe"])
def test_pieces_and_end_of_generation_agree_with_llama_cpp(tiny_vocabs, kind):
    llama_cpp, llm = _vocab_only(tiny_vocabs[kind])
    vocab = llm._model.vocab
    t = TokenTable.from_info(validate_gguf(tiny_vocabs[kind], read_tokens=True))
    assert len(t) == llm.n_vocab()
    buf = ctypes.create_string_buffer(256)
    for i in range(len(t)):
        n = llama_cpp.llama_token_to_piece(vocab, i, buf, 256, 0, False)
        assert (t.pieces[i] or b"") == buf.raw[:n], (i, t.texts[i])
        assert (i in t.eog) == bool(llama_cpp.llama_vocab_is_eog(vocab, i)), (i, t.texts[i])
        assert t.attrs[i] == llama_cpp.llama_vocab_get_attr(vocab, i), (i, t.texts[i])
    assert t.by_bytes  # and the kinds are there: byte tokens, a partial character, specials
    if kind == "bpe":
        assert "中".encode()[:2] in t.by_bytes and t.text(t.eot) == "<|im_end|>"


@pytest.mark.parametrize("kind", ["spm", "bpe"])
def test_checked_tokenizer_writes_each_chunk_exactly(tiny_vocabs, kind):
    _, llm = _vocab_only(tiny_vocabs[kind])
    t = TokenTable.from_info(validate_gguf(tiny_vocabs[kind], read_tokens=True))
    seg = CheckedTokenizer(t, lambda data: llm.tokenize(data, add_bos=False, special=False))
    for chunk in [" hello world", "hello", " café", " 中文", "\n\n    x", "<|im_end|>", "zq!"]:
        tokens, skipped = seg(chunk.encode())
        assert skipped == 0 and written(t, tokens) == chunk.encode(), chunk
    tokens, _ = seg(b" hello")
    assert len(tokens) == 1  # the follower's own tokenisation, not a byte-by-byte cover


# ------------------------------------------------------------------------------- padding is padding
def test_a_strict_prefix_with_real_extra_tokens_is_refused(tiny_models, tiny_vocabs):
    """The crash of issue 25: the longer member tokenizes "zebra" into ids the shorter one lacks, and
    llama_decode failed with status -1. Under vocab="shared" the pair is refused at load, from the
    headers; by default the other member follows through the bridge, and the prompt works."""
    from edge_specens import Ensemble

    for paths in (
        [tiny_vocabs["extra_words"], tiny_models["small"]],
        [tiny_models["small"], tiny_vocabs["extra_words"]],
    ):
        with pytest.raises(VocabularyMismatchError) as e:
            Ensemble.from_paths(paths, vocab="shared")
        msg = str(e.value)
        assert "extra_words.gguf" in msg and "small.gguf" in msg and f"token id {gf.BASE_VOCAB_SIZE}" in msg
        assert "'▁z'" in msg and "not padding" in msg
        ens = Ensemble.from_paths(paths, n_ctx=256)
        try:
            assert ens.members[1].bridge is not None  # a FollowerMember
            assert len(ens.generate("a zebra and quartz", max_tokens=4, temperature=0).tokens) == 4
        finally:
            ens.close()


def test_padding_tails_pass_and_real_tails_do_not(tmp_path):
    def info(name, extras):
        tok = gf.TinyTokenizer(gf.build_vocab() + [(text, 0.0, tt) for text, tt in extras])
        return validate_gguf(gf.write_tiny_llama(tmp_path / f"{name}.gguf", tokenizer=tok), read_tokens=True)

    base = info("base", [])
    unused = info("unused", [("[PAD0]", UNUSED), ("[PAD1]", UNUSED)])
    assert common_vocab_size([base, unused]) == common_vocab_size([unused, base]) == gf.BASE_VOCAB_SIZE
    named = info(
        "named", [("<|PAD_TOKEN|>", CONTROL), ("<|reserved_special_token_0|>", CONTROL), ("<unused7>", CONTROL)]
    )
    assert common_vocab_size([base, named]) == gf.BASE_VOCAB_SIZE  # rows the tokenizing member never sees
    with pytest.raises(VocabularyMismatchError, match=r"turns the text '<\|PAD_TOKEN\|>' into token id 519.*List base"):
        common_vocab_size([named, base])  # member 0 would parse "<|PAD_TOKEN|>" in a prompt into id 519
    for extras in ([("<|im_start|>", CONTROL)], [("[PAD0]", UNUSED), ("▁zz", NORMAL)], [("<x>", USER_DEFINED)]):
        other = info("other", extras)
        for order in ([base, other], [other, base]):
            with pytest.raises(VocabularyMismatchError, match="not padding"):
                common_vocab_size(order)


def test_a_padding_control_token_in_a_prompt_never_reaches_a_member_without_it(tiny_models, tmp_path):
    """Member 0 parses "<|PAD_TOKEN|>" in a prompt into its control token; under vocab="shared" the pair
    is refused at load (it failed in llama_decode with status -1), and works with the shorter file
    first; by default the shorter member follows the longer one through the bridge."""
    from edge_specens import Ensemble

    tok = gf.TinyTokenizer(gf.build_vocab() + [("<|PAD_TOKEN|>", 0.0, CONTROL)])
    padded = gf.write_tiny_llama(tmp_path / "pad_control.gguf", seed=6, tokenizer=tok)
    with pytest.raises(VocabularyMismatchError, match="List small.gguf first"):
        Ensemble.from_paths([padded, tiny_models["small"]], vocab="shared")
    for paths in ([tiny_models["small"], padded], [padded, tiny_models["small"]]):
        ens = Ensemble.from_paths(paths, n_ctx=256)
        try:
            assert len(ens.generate("hi <|PAD_TOKEN|>", max_tokens=2, temperature=0).tokens) == 2
        finally:
            ens.close()


# ------------------------------------------------------------------------------ synthetic vocabularies
ALPHABET = st.sampled_from(["a", "b", "c", " ", "é", "中", "\n", "😀"])


@st.composite
def vocabularies(draw, model=None, all_bytes=None):
    model = model or draw(st.sampled_from(["gpt2", "llama"]))
    words = [w.encode() for w in draw(st.lists(st.text(ALPHABET, min_size=1, max_size=8), min_size=1, max_size=6))]
    pieces = []
    for w in words:
        for _ in range(draw(st.integers(0, 6))):
            i = draw(st.integers(0, len(w) - 1))
            pieces.append(w[i : draw(st.integers(i + 1, len(w)))])
    full = draw(st.booleans()) if all_bytes is None else all_bytes
    drop = () if full else draw(st.sets(st.sampled_from([0x0A, 0x20, 0x61, 0xC3, 0xE4, 0xB8, 0xF0]), max_size=3))
    eog = draw(st.sampled_from(["<|im_end|>", "<end_of_turn>", "</s>"]))
    specials = ((eog, CONTROL), ("<|im_start|>", CONTROL), ("[PAD0]", UNUSED))
    return table(pieces, model=model, specials=specials, drop_bytes=drop)


def committed(data, primary, max_size=16):
    eog = [primary.eot] if primary.eot >= 0 else []
    return data.draw(st.lists(st.sampled_from(text_ids(primary) + eog + [len(primary) - 2]), max_size=max_size))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_follower_writes_exactly_the_committed_bytes_and_is_prefix_stable(data):
    primary, follower = data.draw(vocabularies()), data.draw(vocabularies())
    seq = committed(data, primary)
    f = TextFollower(primary, follower, start=5)
    text = b""
    for i, t in enumerate(seq):
        before = list(f.tokens)
        chunk = f.push(t)
        assert f.tokens[: len(before)] == before and tuple(f.tokens[len(before) :]) == chunk.tokens
        text += primary.pieces[t] or b""
        out = written(follower, f.tokens)
        if f.skipped == 0:
            assert out + f.held == text
        else:  # bytes the follower has no token for are skipped, and counted
            assert len(out) + f.skipped + len(f.held) == len(text)
        assert len(f.held) <= 3 and f.votes == (not f.held) == f.votes_at(5 + i + 1)
        assert all(
            follower.pieces[u] is not None or u in follower.eog or follower.texts[u] in primary.texts
            for u in chunk.tokens
        )
    # a function of the prefix: rebuilt from scratch, every prefix gives the same tokens
    for i in range(len(seq) + 1):
        g = TextFollower(primary, follower, start=5)
        g.extend(seq[:i])
        assert g.tokens == f.tokens[: f.length_at(5 + i)] and g.held == (f._marks[i - 1][1] if i else b"")


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_rollback_by_primary_position_restores_the_state(data):
    primary, follower = data.draw(vocabularies()), data.draw(vocabularies())
    seq, alt = committed(data, primary), committed(data, primary, max_size=6)
    cut = data.draw(st.integers(0, len(seq)))
    f = TextFollower(primary, follower, start=3)
    f.extend(seq)
    keep = f.rollback(3 + cut)
    assert keep == len(f.tokens) and f.position == 3 + cut
    f.extend(alt)
    g = TextFollower(primary, follower, start=3)
    g.extend(seq[:cut] + alt)
    assert (f.tokens, f.held, f.skipped) == (g.tokens, g.held, g.skipped)
    with pytest.raises(IndexError):
        f.rollback(2)


@settings(max_examples=50, deadline=None)
@given(vocabularies(), st.lists(st.integers(0, 10**6), max_size=12))
def test_identical_vocabularies_follow_by_id(t, picks):
    ids = text_ids(t) + [t.eot]
    seq = [ids[p % len(ids)] for p in picks]
    f = TextFollower(t, t)
    f.extend(seq)
    assert f.tokens == seq and f.votes
    fw = Pushforward.build(t, t)
    p = np.random.default_rng(len(seq)).random(len(t))
    assert fw.identity and fw.carry(p) is p and np.array_equal(fw.index, np.arange(len(t)))


def test_a_split_character_is_held_back_and_the_follower_abstains():
    zhong = "中".encode()
    primary = table([zhong[:2], b" a"])  # GPT-2-like: owns the first two bytes of 中 as a token
    follower = table([zhong, b" a"], model="llama")  # SentencePiece-like: whole characters only
    f = TextFollower(primary, follower)
    first = f.push(primary.by_bytes[zhong[:2]])
    assert first.tokens == () and first.held == zhong[:2] and not f.votes
    second = f.push(primary.by_bytes[zhong[2:]])
    assert second.tokens == (follower.by_bytes[zhong],) and f.votes
    # the character never completes: the held bytes go out as byte tokens when text resumes
    f.push(primary.by_bytes[zhong[:2]])
    third = f.push(primary.by_bytes[b" a"])
    assert written(follower, third.tokens) == zhong[:2] + b" a" and f.votes
    # a follower that owns the partial token takes it and keeps voting
    g = TextFollower(primary, table([zhong[:2]]))
    assert g.push(primary.by_bytes[zhong[:2]]).held == b"" and g.votes


def test_control_tokens_reach_the_follower_by_text_or_role():
    primary = table([b"ab"], specials=(("<|im_end|>", CONTROL), ("<|im_start|>", CONTROL)))
    follower = table([b"ab"], model="llama", specials=(("<end_of_turn>", CONTROL), ("<|im_start|>", CONTROL)))
    f = TextFollower(primary, follower)
    start = f.push(primary.controls_by_text[b"<|im_start|>"])
    assert start.tokens == (follower.controls_by_text[b"<|im_start|>"],)
    assert f.push(primary.eot).tokens == (follower.eot,) and follower.text(follower.eot) == "<end_of_turn>"


def test_complete_prefix_holds_back_only_an_unfinished_character():
    zhong, emoji = "中".encode(), "😀".encode()
    assert complete_prefix(b"abc") == 3 and complete_prefix(b"") == 0
    assert complete_prefix(b"a" + zhong[:1]) == 1 and complete_prefix(b"a" + zhong[:2]) == 1
    assert complete_prefix(b"a" + zhong) == 4 and complete_prefix(emoji[:3]) == 0
    assert complete_prefix(b"\xe4a") == 2 and complete_prefix(b"\xb8\xb8") == 2  # broken: nothing to wait for
    assert complete_prefix(b"\xff") == 1


def test_greedy_segmenter_covers_with_the_longest_piece_and_counts_skips():
    t = table([b"ab", b"abc"], drop_bytes=(0x7A,))
    tokens, skipped = GreedySegmenter(t)(b"abcabz!")
    assert written(t, tokens) == b"abcab!" and skipped == 1 and len(tokens) == 3


# --------------------------------------------------------------------------------------- pushforward
@settings(max_examples=150, deadline=None)
@given(st.data())
def test_pushforward_carries_mass_to_the_token_that_starts_each_piece(data):
    primary, follower = data.draw(vocabularies()), data.draw(vocabularies())
    fw = Pushforward.build(follower, primary)
    p = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).random(len(follower))
    q = fw.carry(p)
    reference = np.zeros(len(primary))
    for u, t in enumerate(fw.index):
        if t != UNMAPPED:
            reference[t] += p[u]
    assert q.shape == (len(primary),) and np.allclose(q, reference, rtol=0, atol=1e-12)
    assert np.isclose(q.sum(), p.sum() - fw.dropped(p))
    assert np.allclose(fw.carry(np.stack([p, 2 * p])), np.stack([q, 2 * q]))
    for u, piece in enumerate(follower.pieces):
        t = int(fw.index[u])
        if u in follower.eog:
            assert t in primary.eog  # end of generation by role
        elif piece:
            if t != UNMAPPED:
                assert piece.startswith(primary.pieces[t])  # F(u) starts what u writes
            assert (t != UNMAPPED) == any(piece[:n] in primary.by_bytes for n in range(1, len(piece) + 1))
        elif follower.is_padding(u) and not fw.identity:
            assert t == UNMAPPED


def test_pushforward_preserves_mass_when_everything_maps():
    primary = table([b" hello", b" he", "é".encode()])
    follower = table([b" hell", b" hello world", "é".encode()], model="llama", specials=(("</s>", CONTROL),))
    fw = Pushforward.build(follower, primary)
    assert (fw.index >= 0).all() and not fw.identity
    p = np.random.default_rng(0).random(len(follower))
    assert np.isclose(fw.carry(p).sum(), p.sum()) and fw.dropped(p) == 0
    assert primary.pieces[fw.index[follower.by_bytes[b" hello world"]]] == b" hello"
    assert primary.pieces[fw.index[follower.by_bytes[b" hell"]]] == b" he"
    assert fw.index[follower.controls_by_text[b"</s>"]] == primary.eot
    r = fw.project(np.log(p) + 3.0)
    assert r is not None and np.isclose(r.sum(), 1.0) and np.allclose(r, fw.carry(p) / p.sum())


def test_project_abstains_when_all_mass_maps_nowhere():
    primary = table([], drop_bytes=range(0x80, 0x100))  # writes ASCII only
    follower = table([], drop_bytes=range(0x80))  # writes only bytes >= 0x80
    fw = Pushforward.build(follower, primary)
    logits = np.full(len(follower), -np.inf, np.float32)
    logits[0] = 0.0  # all mass on byte 0x80, which the primary cannot start
    assert fw.project(logits) is None


# ------------------------------------------------------------------------------------------- report
def test_report_numbers_and_end_of_generation_mapping():
    primary = table([b" hello", b" world"], specials=(("<|im_end|>", CONTROL), ("<|endoftext|>", CONTROL)), name="qwen")
    follower = table([b" hello", b" wor"], model="llama", specials=(("<end_of_turn>", CONTROL),), name="gemma")
    r = report(primary, follower)
    assert r.refusal is None and not r.identical
    assert r.follower_text_tokens == 258 and r.exact == 257 and r.by_prefix == 1  # " wor" maps to " " + "w"...
    assert r.primary_as_one == 257 and r.primary_text_tokens == 258 and r.missing_bytes == ()
    assert r.eog_map == (("<end_of_turn>", "<|im_end|>"),)
    line = r.line()
    assert (
        line.startswith("gemma → primary qwen: 99.6 % of its tokens are primary tokens")
        and "<end_of_turn> → <|im_end|>" in line
    )


def test_report_refuses_what_cannot_follow():
    primary = table([b" hello"], name="p")
    lacking = table([b" hello"], drop_bytes=range(0x80, 0x100), name="k")
    r = report(primary, lacking)
    assert r.unwritable == 128 and r.missing_bytes == tuple(range(0x80, 0x100))
    assert "cannot write 128 of the primary's 257 text tokens" in r.refusal and r.first_unwritable == repr(b"\x80")
    with pytest.raises(VocabularyMismatchError, match="k cannot follow p: it cannot write"):
        r.raise_if_refused()
    no_eog = table([b" hello"], specials=(("<|im_start|>", CONTROL),), name="k", eog=())
    assert "no end-of-generation token" in report(primary, no_eog).refusal
    assert "no end-of-generation token" in report(no_eog, primary).refusal
    wpm = TokenTable.build(["[UNK]", "hello"], [2, NORMAL], model="bert", name="bert")
    assert "normalises text" in report(primary, wpm).refusal
    rwkv = TokenTable.build(["a"], [NORMAL], model="rwkv", name="r")
    assert "no byte table" in report(primary, rwkv).refusal and "no byte table" in report(rwkv, primary).refusal
    assert report(primary, primary).identical and "the same vocabulary" in report(primary, primary).line()


def test_models_info_against_says_how_the_vocabularies_map(tiny_vocabs, tiny_models):
    from test_cli import run

    rc, out, err = run(["models", "info", str(tiny_vocabs["spm"]), "--against", str(tiny_vocabs["bpe"])])
    lines = out.splitlines()
    assert rc == 0 and "vocab size" in out and not err
    spm, bpe = "tiny-llama-s1-base", "tiny-llama-s3-base"  # general.name of the two files
    assert lines[-2].startswith(f"{spm} → primary {bpe}: ") and "</s> → <|im_end|>" in lines[-2]
    assert lines[-1].startswith(f"{bpe} → primary {spm}: ") and "<|endoftext|> → </s>" in lines[-1]
    rc, out, _ = run(["models", "info", str(tiny_models["small"]), "--against", str(tiny_models["padded"])])
    assert rc == 0 and out.splitlines()[-1].endswith("the same vocabulary, up to 13 padding rows (no mapping)")
    rc, _, err = run(["models", "info", str(tiny_vocabs["spm"]), "--against", "/nonexistent.gguf"])
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "file not found" in err
