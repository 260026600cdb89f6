"""Where members come from (edge_specens/sources/): the reference grammar, the models users already
have in Ollama's and LM Studio's stores and the Hugging Face cache (laid out here in a temporary
folder as those tools lay them out, from the tiny GGUF models), loaded where they are, never copied."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from edge_specens import Ensemble, FetchError, InvalidParameterError, ModelLoadError, ModelNotFoundError
from edge_specens.sources import (
    HubFile,
    LMStudioName,
    OllamaName,
    parse_reference,
    parse_references,
    resolve,
)
from edge_specens.sources.reference import hub_reference

REV = "0123456789abcdef0123456789abcdef01234567"


# ---------------------------------------------------------------------------- stores, as the tools lay them out
def ollama_store(models: Path) -> dict[str, Path]:
    """Ollama's models folder: manifests/<host>/<namespace>/<model>/<tag> (JSON) and blobs/sha256-<hex>."""

    def blob(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        path = models / "blobs" / f"sha256-{digest}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    def manifest(name: str, layers: list[dict]) -> None:
        path = models / "manifests" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {"mediaType": "application/vnd.docker.container.image.v1+json", **blob(b'{"model_format":"gguf"}')}
        path.write_text(
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": config,
                    "layers": layers,
                }
            )
        )

    return {"blob": blob, "manifest": manifest}  # type: ignore[dict-item]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home folder of our own: no real Ollama, LM Studio or Hugging Face cache is ever looked at."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("EDGE_SPECENS_CACHE", str(tmp_path / "edge-cache"))
    return home


@pytest.fixture
def ollama(home, tiny_models):
    """~/.ollama/models with tiny:latest (small), someone/tinybig:q4 (big), broken:latest (a blob that
    is not GGUF), vision:latest (no model layer) and gone:latest (its blob deleted)."""
    models = home / ".ollama" / "models"
    s = ollama_store(models)
    template = {"mediaType": "application/vnd.ollama.image.template", **s["blob"](b"{{ .Prompt }}")}
    small = {"mediaType": "application/vnd.ollama.image.model", **s["blob"](tiny_models["small"].read_bytes())}
    big = {"mediaType": "application/vnd.ollama.image.model", **s["blob"](tiny_models["big"].read_bytes())}
    broken = {"mediaType": "application/vnd.ollama.image.model", **s["blob"](b"not a model at all " * 64)}
    s["manifest"]("registry.ollama.ai/library/tiny/latest", [small, template])
    s["manifest"]("registry.ollama.ai/someone/tinybig/q4", [big])
    s["manifest"]("registry.ollama.ai/library/broken/latest", [broken])
    s["manifest"]("registry.ollama.ai/library/vision/latest", [template])
    gone = {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + "e" * 64, "size": 10}
    s["manifest"]("registry.ollama.ai/library/gone/latest", [gone])
    return {"root": models, "small": models / "blobs" / small["digest"].replace(":", "-")}


@pytest.fixture
def lmstudio(home, tiny_models):
    """~/.lmstudio/models/<publisher>/<model>/<file>.gguf, with a vision projector beside one model and
    a folder holding two quantizations."""
    models = home / ".lmstudio" / "models"
    one = models / "tiny-pub" / "Tiny-Small-GGUF"
    one.mkdir(parents=True)
    shutil.copy(tiny_models["small"], one / "Tiny-Small-Q4_K_M.gguf")
    shutil.copy(tiny_models["third"], one / "mmproj-Tiny-Small-f16.gguf")
    two = models / "tiny-pub" / "Tiny-Big-GGUF"
    two.mkdir(parents=True)
    shutil.copy(tiny_models["big"], two / "Tiny-Big-Q4_K_M.gguf")
    shutil.copy(tiny_models["big"], two / "Tiny-Big-Q8_0.gguf")
    return models


def hub_cache(root: Path, repo: str, file: str, src: Path) -> Path:
    """One file in a Hugging Face cache as huggingface_hub lays it out: blobs/<sha256>,
    snapshots/<commit>/<file> a relative link to the blob, refs/main holding the commit."""
    folder = root / ("models--" + repo.replace("/", "--"))
    data = src.read_bytes()
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = folder / "snapshots" / REV / file
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(REV)
    return link


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache of our own, offline: huggingface_hub may never reach the network."""
    pytest.importorskip("huggingface_hub")
    root = tmp_path / "hf-hub"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(root))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    return root


def tree(*folders: Path) -> list[tuple[str, int]]:
    """Every file under the folders with its size: what a load must leave as it was."""
    return sorted((str(p), p.lstat().st_size) for f in folders if f.exists() for p in f.rglob("*"))


# ---------------------------------------------------------------------------- the grammar
@pytest.mark.parametrize(
    "text, kind, target, endpoint",
    [
        ("ollama:llama3.2", "ollama", OllamaName("registry.ollama.ai", "library", "llama3.2", "latest"), None),
        ("ollama:llama3.2:1b", "ollama", OllamaName("registry.ollama.ai", "library", "llama3.2", "1b"), None),
        ("ollama:me/m:t", "ollama", OllamaName("registry.ollama.ai", "me", "m", "t"), None),
        ("ollama:hf.co/bartowski/X-GGUF:Q4_K_M", "ollama", OllamaName("hf.co", "bartowski", "X-GGUF", "Q4_K_M"), None),
        (
            "ollama:qwen2.5:0.5b@10.0.0.2:50052",
            "ollama",
            OllamaName("registry.ollama.ai", "library", "qwen2.5", "0.5b"),
            "10.0.0.2:50052",
        ),
        ("lmstudio:pub/Model-GGUF", "lmstudio", LMStudioName("pub", "Model-GGUF"), None),
        ("lmstudio:pub/Model-GGUF/m-Q4_K_M.gguf", "lmstudio", LMStudioName("pub", "Model-GGUF", "m-Q4_K_M.gguf"), None),
        ("lmstudio:Model-GGUF", "lmstudio", LMStudioName(None, "Model-GGUF"), None),
        ("owner/repo:dir/file.gguf", "hf", HubFile("owner/repo", "dir/file.gguf"), None),
        ("hf://owner/repo/file.gguf@h:1", "hf", HubFile("owner/repo", "file.gguf"), "h:1"),
        ("models/m.gguf", "path", Path("models/m.gguf"), None),
        ("m.gguf@127.0.0.1:50052", "path", Path("m.gguf"), "127.0.0.1:50052"),
    ],
)
def test_every_kind_of_reference_parses_in_one_place(text, kind, target, endpoint):
    r = parse_reference(text)
    assert (r.kind, r.target) == (kind, target)
    assert (str(r.endpoint) if r.endpoint else None) == endpoint
    assert hub_reference("owner/repo:f.gguf") == ("owner/repo", "f.gguf")  # fetch.py re-exports this one


@pytest.mark.parametrize(
    "text, words",
    [
        ("ollama:", "needs a model name"),
        ("ollama:a/b/c/d", "not a valid Ollama host"),
        ("ollama:llama3.2:", "not a valid Ollama tag"),
        ("ollama:ns.x/m", "not a valid Ollama namespace"),
        ("ollama:m@sha256:" + "a" * 64, "not a digest"),
        ("lmstudio:../../etc/passwd", "PUBLISHER/MODEL"),
        ("lmstudio:/abs", "PUBLISHER/MODEL"),
        ("lmstudio:a/b/c/d", "PUBLISHER/MODEL"),
        ("ollama:m@10.0.0.2:", "port"),
    ],
)
def test_malformed_references_are_refused_before_anything_is_read(text, words):
    with pytest.raises(InvalidParameterError, match=words):
        parse_reference(text)


def test_a_path_that_exists_is_always_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for odd in ("ollama:x", "lmstudio:y", "owner", "m.gguf@h:1"):
        (tmp_path / odd).write_bytes(b"")
        assert parse_reference(odd).kind == "path" and parse_reference(odd).endpoint is None


def test_placement_merges_at_and_rpc_and_refuses_conflicts():
    refs = parse_references(["ollama:a", "lmstudio:p/m@10.0.0.2:50052"], rpc=["10.0.0.3:50052", None])
    assert [str(r.endpoint) for r in refs] == ["10.0.0.3:50052", "10.0.0.2:50052"]
    with pytest.raises(InvalidParameterError, match="placed twice"):
        parse_references(["a.gguf@10.0.0.2:1"], rpc="10.0.0.3:1")
    with pytest.raises(InvalidParameterError, match="given to 2 members"):
        parse_references(["a.gguf", "b.gguf"], rpc="10.0.0.2:1")
    with pytest.raises(InvalidParameterError, match="rpc has 1 values for 2 members"):
        parse_references(["a.gguf", "b.gguf"], rpc=["10.0.0.2:1"])


# ---------------------------------------------------------------------------- Ollama
def test_ollama_models_load_in_place_and_decode_as_the_files_do(ollama, tiny_models, tmp_path):
    before = tree(tmp_path)
    ens = Ensemble.from_paths(["ollama:tiny", "ollama:someone/tinybig:q4"], n_ctx=128)
    ref = Ensemble.from_paths([tiny_models["small"], tiny_models["big"]], n_ctx=128)
    try:
        assert ens.members[0].path == ollama["small"]  # the blob itself: nothing copied
        assert [m.name for m in ens.members] == ["tiny:latest", "someone/tinybig:q4"]
        got = ens.generate("hello", max_tokens=6, temperature=0).tokens
        assert got == ref.generate("hello", max_tokens=6, temperature=0).tokens
    finally:
        ens.close()
        ref.close()
    assert tree(tmp_path) == before


def test_ollama_models_honours_OLLAMA_MODELS_as_ollama_reads_it(ollama, monkeypatch, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.move(ollama["root"], moved)
    with pytest.raises(ModelNotFoundError, match="no Ollama models at"):
        resolve(parse_reference("ollama:tiny"))
    monkeypatch.setenv("OLLAMA_MODELS", f'  "{moved}" ')  # envconfig.Var trims spaces and quotes
    assert resolve(parse_reference("ollama:tiny:latest")).path.parent == moved / "blobs"


@pytest.mark.parametrize(
    "name, error, words",
    [
        ("ollama:tiny:v2", ModelNotFoundError, "has not pulled it.*it has tiny:latest.*ollama pull tiny:v2"),
        ("ollama:nothing", ModelNotFoundError, "has not pulled it"),
        ("ollama:gone", ModelNotFoundError, "blob .* is missing"),
        ("ollama:vision", ModelLoadError, "no GGUF model layer"),
        ("ollama:broken", ModelLoadError, "ollama:broken: .*not a valid GGUF file"),
    ],
)
def test_ollama_problems_are_one_typed_error_before_llama_cpp(ollama, name, error, words):
    with pytest.raises(error, match=words) as e:
        Ensemble.from_paths([name])
    assert "\n" not in str(e.value)


def test_a_truncated_ollama_blob_is_caught_by_its_manifest_size(ollama):
    ollama["small"].write_bytes(ollama["small"].read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="manifest says .*corrupt or incomplete"):
        resolve(parse_reference("ollama:tiny"))


def test_cli_ollama_problems_are_one_line_exit_1(ollama, home):
    from test_cli import run

    for ref, words in (("ollama:nothing", "has not pulled it"), ("ollama:broken", "not a valid GGUF")):
        rc, out, err = run(["generate", "hi", "-m", ref, "-n", "2"])
        assert rc == 1 and len(err.strip().splitlines()) == 1 and words in err and "Traceback" not in err
    shutil.rmtree(home / ".ollama")
    rc, _, err = run(["generate", "hi", "-m", "ollama:tiny", "-n", "2"])
    assert rc == 1 and err.strip().startswith("error: ollama:tiny:latest: no Ollama models at")


def test_models_info_reads_an_ollama_or_lmstudio_model_in_place(ollama, lmstudio):
    from test_cli import run

    rc, out, _ = run(["models", "info", "ollama:tiny"])
    assert rc == 0 and out.splitlines()[0].split() == ["file", str(ollama["small"])]
    rc, out, _ = run(["models", "info", "lmstudio:Tiny-Small-GGUF", "--against", "ollama:someone/tinybig:q4"])
    assert rc == 0 and "the same vocabulary" in out


# ---------------------------------------------------------------------------- LM Studio
def test_lmstudio_models_by_folder_name(lmstudio, tiny_models, tmp_path):
    small = lmstudio / "tiny-pub" / "Tiny-Small-GGUF" / "Tiny-Small-Q4_K_M.gguf"
    for text in ("lmstudio:tiny-pub/Tiny-Small-GGUF", "lmstudio:Tiny-Small-GGUF", "tiny-pub/Tiny-Small-GGUF"):
        assert resolve(parse_reference(text)).path == small  # the projector beside it is not a model
    big8 = resolve(parse_reference("lmstudio:tiny-pub/Tiny-Big-GGUF/Tiny-Big-Q8_0.gguf")).path
    assert big8.name == "Tiny-Big-Q8_0.gguf"
    before = tree(tmp_path)
    ens = Ensemble.from_paths(["lmstudio:Tiny-Small-GGUF", "Tiny-Small-GGUF"], n_ctx=128)
    try:
        assert [m.path for m in ens.members] == [small, small]
    finally:
        ens.close()
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "text, error, words",
    [
        ("lmstudio:Tiny-Big-GGUF", InvalidParameterError, "holds 2 GGUF models .*name one as"),
        ("lmstudio:tiny-pub/Nothing-GGUF", ModelNotFoundError, "no such model in LM Studio"),
        ("lmstudio:tiny-pub/Tiny-Small-GGUF/x.gguf", ModelNotFoundError, "has no x.gguf .*Tiny-Small-Q4_K_M.gguf"),
    ],
)
def test_lmstudio_problems_are_typed_errors(lmstudio, text, error, words):
    with pytest.raises(error, match=words):
        Ensemble.from_paths([text])


def test_lmstudio_home_pointer_and_no_store(home, lmstudio, tmp_path):
    moved = tmp_path / "lms-home"
    moved.mkdir()
    shutil.move(home / ".lmstudio" / "models", moved / "models")
    with pytest.raises(ModelNotFoundError, match="no LM Studio models folder"):
        resolve(parse_reference("lmstudio:Tiny-Small-GGUF"))
    with pytest.raises(ModelLoadError, match="file not found"):  # a bare name is a path when no store has it
        resolve(parse_reference("Tiny-Small-GGUF"))
    (home / ".lmstudio-home-pointer").write_text(f"{moved}\n")  # where LM Studio says its home is
    assert resolve(parse_reference("lmstudio:Tiny-Small-GGUF")).path.parent.parent.parent == moved / "models"


# ---------------------------------------------------------------------------- models list --all
def test_models_list_all_shows_every_store_from_headers_without_copying(ollama, lmstudio, hub, tiny_models, tmp_path):
    from test_cli import run

    hub_cache(hub, "owner/repo", "model.gguf", tiny_models["third"])
    before = tree(tmp_path)
    rc, out, err = run(["models", "list", "--all"])
    assert rc == 0, err
    assert tree(tmp_path) == before
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ") and ln.split()}
    tiny = lines["ollama:tiny:latest"]
    assert "llama" in tiny and "chat template" in tiny and "no chat template" not in tiny
    assert "ollama:someone/tinybig:q4" in lines
    assert "cannot be used" in lines["ollama:broken:latest"] and "not a valid GGUF" in lines["ollama:broken:latest"]
    assert "no GGUF model layer" in lines["ollama:vision:latest"]
    assert "lmstudio:tiny-pub/Tiny-Small-GGUF/Tiny-Small-Q4_K_M.gguf" in lines
    assert "lmstudio:tiny-pub/Tiny-Big-GGUF/Tiny-Big-Q8_0.gguf" in lines
    assert not any("mmproj" in k for k in lines)
    third = lines["owner/repo:model.gguf"]
    assert "no chat template" in third
    from edge_specens.gguf_header import validate_gguf

    info = validate_gguf(tiny_models["third"])
    assert f"{info.metadata['tokenizer.ggml.model']} {info.n_vocab:,}" in third
    for ref in (
        "ollama:tiny:latest",
        "lmstudio:tiny-pub/Tiny-Small-GGUF/Tiny-Small-Q4_K_M.gguf",
        "owner/repo:model.gguf",
    ):
        assert resolve(parse_reference(ref)).info.n_vocab > 0  # what is listed loads as listed


def test_models_list_all_with_no_stores_says_where_it_looked(home, hub):
    from test_cli import run

    shutil.rmtree(hub)
    rc, out, _ = run(["models", "list", "--all"])
    assert rc == 0
    assert "ollama: none here (looked in" in out and "lmstudio: none here" in out and "huggingface: none here" in out


# ---------------------------------------------------------------------------- the hub cache, the paper's presets
PAPER = {
    "qwen2.5-1.5b-instruct-coder-math": [
        ("Qwen/Qwen2.5-1.5B-Instruct-GGUF", "qwen2.5-1.5b-instruct-q4_k_m.gguf", "small"),
        ("Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "big"),
        ("bartowski/Qwen2.5-Math-1.5B-Instruct-GGUF", "Qwen2.5-Math-1.5B-Instruct-Q4_K_M.gguf", "third"),
    ],
    "qwen2.5-3b-instruct-coder": [
        ("Qwen/Qwen2.5-3B-Instruct-GGUF", "qwen2.5-3b-instruct-q4_k_m.gguf", "small"),
        ("Qwen/Qwen2.5-Coder-3B-Instruct-GGUF", "qwen2.5-coder-3b-instruct-q4_k_m.gguf", "big"),
    ],
    "llama-3.1-8b-instruct-cd-3.2-1b": [
        ("bartowski/Meta-Llama-3.1-8B-Instruct-GGUF", "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "big"),
        ("bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q4_K_M.gguf", "small"),
    ],
}


def test_the_papers_presets_are_named_by_their_hub_repos_and_unpinned():
    from edge_specens.presets import load_preset

    for name, members in PAPER.items():
        p = load_preset(name)
        assert [(m.hf_repo, m.hf_file) for m in p.members] == [(r, f) for r, f, _ in members]
        assert all(m.hub_only and not m.pinned for m in p.members)
    trio, duo, cd = (load_preset(n) for n in PAPER)
    assert trio.method == "we" and trio.weights == pytest.approx((1 / 3,) * 3)
    assert duo.method == "we" and duo.weights == (0.5, 0.5)
    assert cd.method == "cd" and cd.mu == 0.1 and cd.members[0].hf_file.startswith("Meta-Llama-3.1-8B")


def test_the_papers_presets_resolve_offline_from_a_hub_cache(hub, home, tiny_models):
    from test_cli import run

    from edge_specens.fetch import pull_preset
    from edge_specens.presets import load_preset

    rc, out, _ = run(["models", "list"])
    assert rc == 0
    for name in PAPER:
        assert f"{name} [hub only]:" in out
    assert out.count("[hub only; not cached") == 7
    links = {
        name: [hub_cache(hub, repo, file, tiny_models[which]) for repo, file, which in members]
        for name, members in PAPER.items()
    }
    for name in PAPER:
        assert pull_preset(load_preset(name), progress=False) == links[name]  # the cache's own files
    rc, out, _ = run(["models", "list"])
    assert rc == 0 and out.count("[hub only; cached") == 7 and "[hub only; not cached" not in out
    ens = Ensemble.from_preset("llama-3.1-8b-instruct-cd-3.2-1b", n_ctx=128, progress=False)
    try:
        assert ens.spec.method == "cd" and len(ens.generate("hi", max_tokens=3, temperature=0).tokens) == 3
    finally:
        ens.close()


def test_a_paper_preset_missing_from_an_offline_cache_is_one_fetch_error(hub, home):
    from edge_specens.fetch import pull_preset
    from edge_specens.presets import load_preset

    with pytest.raises(FetchError, match="Qwen2.5-3B-Instruct-GGUF") as e:
        pull_preset(load_preset("qwen2.5-3b-instruct-coder"), progress=False)
    assert "\n" not in str(e.value)


def test_hub_references_resolve_from_the_cache_as_the_hub_lays_it_out(hub, home, tiny_models):
    link = hub_cache(hub, "owner/repo", "sub/model.gguf", tiny_models["small"])
    for text in ("owner/repo:sub/model.gguf", "hf://owner/repo/sub/model.gguf"):
        src = resolve(parse_reference(text))
        assert src.path == link and src.name == "model.gguf" and src.info.tokens
