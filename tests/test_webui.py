"""The chat page's server side: the static route at /, its CSP, /webui/ensemble.json, --no-webui, and
the opt-in `provenance` stream field (tests/test_webui_browser.py drives the page itself)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from edge_specens import Ensemble  # noqa: E402
from edge_specens.decode.state import Step  # noqa: E402
from edge_specens.generation import Event  # noqa: E402
from edge_specens.params import STRATEGIES, SamplingParams  # noqa: E402
from edge_specens.server import create_app  # noqa: E402
from edge_specens.server.provenance import Provenance, split  # noqa: E402
from edge_specens.server.webui import CSP, ENSEMBLE_PATH, WEBUI_DIR, webui_files  # noqa: E402

HOWS = {"accepted", "bonus", "lookup", "resampled", "sampled", "flush"}
OPENAI_CHUNK_KEYS = {"id", "object", "created", "model", "choices"}


@pytest.fixture(scope="module")
def ens(tiny_models):
    e = Ensemble.from_paths(
        [tiny_models["small"], tiny_models["big"]], n_ctx=512, kv_f32=True, n_threads=1, n_threads_batch=1
    )
    yield e
    e.close()


@pytest.fixture(scope="module")
def client(ens):
    with TestClient(create_app(ens)) as c:
        yield c


def stream(client, path: str, body: dict) -> list[dict]:
    """The JSON chunks of one streamed request, up to [DONE]."""
    chunks = []
    with client.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    return chunks


def content(chunk: dict) -> str:
    choice = chunk["choices"][0] if chunk["choices"] else {}
    return (choice.get("delta") or {}).get("content") or choice.get("text") or ""


# ---------------------------------------------------------------------- the page
def test_the_page_and_its_files_carry_the_csp(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "default-src 'none'" in CSP
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    html = r.text
    # nothing inline that the CSP would have to allow: every script is a file, no handlers, no styles
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/webui/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+\s*=", html) and " style=" not in html
    referenced = re.findall(r'(?:src|href)="/webui/([^"]+)"', html)
    assert {"app.js", "style.css", "vendor/marked.umd.js", "vendor/purify.min.js"} <= set(referenced)
    types = {".js": "text/javascript", ".css": "text/css"}
    for rel in referenced:
        f = client.get("/webui/" + rel)
        assert f.status_code == 200, rel
        assert f.headers["content-type"].startswith(types[Path(rel).suffix]), rel
        assert f.headers["content-security-policy"] == CSP
        assert f.content == (WEBUI_DIR / rel).read_bytes()
    assert client.head("/").status_code == 200


@pytest.mark.parametrize(
    "path", ["/webui/nothing.js", "/webui/../webui.py", "/webui/%2e%2e/app.py", "/webui/vendor", "/webui/"]
)
def test_only_the_shipped_files_are_served(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.text)
    assert r.json()["error"]["code"] == "not_found"


def test_vendored_libraries_are_pinned_with_their_licences():
    vendor = WEBUI_DIR / "vendor"
    readme = (vendor / "README.md").read_text()
    pins = dict((name, digest) for digest, name in re.findall(r"^\s+([0-9a-f]{64})\s+(\S+)$", readme, re.M))
    scripts = {p.name for p in vendor.glob("*.js")}
    assert scripts == set(pins) == {"marked.umd.js", "highlight.min.js", "purify.min.js"}
    for name, digest in pins.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    for lib in ("marked", "highlight.js", "dompurify"):
        assert (vendor / f"{lib}.LICENSE.txt").stat().st_size > 500, lib
    assert "vendor/marked.LICENSE.txt" in webui_files()  # served too: the licence travels with the code


def test_the_page_is_package_data():
    """setuptools ships what pyproject's package-data patterns match: every file the page serves."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {p for pattern in patterns["edge_specens.server"] for p in (WEBUI_DIR.parent).glob(pattern)}
    assert {p.resolve() for p in webui_files().values()} <= {p.resolve() for p in shipped}


def test_ensemble_info_names_members_and_the_servers_defaults(client, ens, tiny_models):
    info = client.get(ENSEMBLE_PATH).json()
    assert info["server"] == "edge-specens" and info["model"] == ens.name and info["n_ctx"] == ens.n_ctx
    assert [m["name"] for m in info["members"]] == ["small.gguf", "big.gguf"]
    for m, path in zip(info["members"], (tiny_models["small"], tiny_models["big"])):
        assert m["device"] == "cpu" and m["file_bytes"] == path.stat().st_size and m["n_params"] > 0
        assert m["weight"] == pytest.approx(0.5)
    d = SamplingParams()
    assert info["defaults"] == {
        "temperature": d.temperature,
        "top_k": d.top_k,
        "top_p": d.top_p,
        "min_p": d.min_p,
        "seed": None,
        "max_tokens": None,
        "strategy": "auto",
    }
    assert info["strategies"] == list(STRATEGIES) and info["api_key_required"] is False


def test_an_api_key_guards_the_ensemble_info_but_not_the_page(ens):
    with TestClient(create_app(ens, api_key="sesame")) as c:
        assert c.get("/").status_code == 200 and c.get("/webui/app.js").status_code == 200
        r = c.get(ENSEMBLE_PATH)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert c.get(ENSEMBLE_PATH, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.get(ENSEMBLE_PATH, headers={"Authorization": "Bearer sesame"})
        assert ok.status_code == 200 and ok.json()["api_key_required"] is True


def test_no_webui_serves_no_page(ens):
    with TestClient(create_app(ens, webui=False)) as c:
        for path in ("/", "/webui/app.js", ENSEMBLE_PATH):
            assert c.get(path).status_code == 404, path
        assert c.get("/v1/models").status_code == 200


def test_serve_no_webui_flag(tiny_models, monkeypatch):
    from click.testing import CliRunner

    import edge_specens.cli.serve as serve_mod

    class FakeSocket:
        def __init__(self, host, port):
            self.addr = (host, port)

        def getsockname(self):
            return self.addr

        def close(self):
            pass

    calls = []
    monkeypatch.setattr(serve_mod, "bind_socket", FakeSocket)
    monkeypatch.setattr(serve_mod, "run_server", lambda ens, **kw: calls.append(kw))
    models = ["-m", str(tiny_models["small"]), "-c", "256"]
    r = CliRunner().invoke(serve_mod.serve, models)
    assert r.exit_code == 0 and calls[-1]["webui"] is True, r.output
    assert "chat page at http://127.0.0.1:8080/" in r.output
    r = CliRunner().invoke(serve_mod.serve, [*models, "--no-webui"])
    assert r.exit_code == 0 and calls[-1]["webui"] is False, r.output
    assert "chat page" not in r.output
    assert "--no-webui" in CliRunner().invoke(serve_mod.serve, ["--help"]).output


# ---------------------------------------------------------------------- the provenance stream field
@pytest.mark.parametrize("strategy", ["se", "sd", "auto"])
def test_provenance_rides_on_each_chunk_when_asked(client, strategy):
    body = {"messages": [{"role": "user", "content": "hello world"}], "max_tokens": 40, "temperature": 0}
    chunks = stream(client, "/v1/chat/completions", {**body, "strategy": strategy, "provenance": True})
    pieces = [c for c in chunks if content(c)]
    assert pieces
    n_spans = 0
    for c in pieces:
        spans = c["edge_specens"]["provenance"]
        assert "".join(s["text"] for s in spans) == content(c)  # the page colours exactly the text
        for s in spans:
            assert set(s) == {"token", "text", "how", "member"} and s["how"] in HOWS
            assert (s["member"] in (0, 1)) == (s["how"] in ("accepted", "bonus")), s
        n_spans += sum(s["token"] is not None for s in spans)
    stats = chunks[-1]["edge_specens"]
    assert n_spans == stats["new_tokens"]  # no stop string: every token's text came out
    hows = {s["how"] for c in pieces for s in c["edge_specens"]["provenance"]}
    if strategy in ("se", "sd"):  # speculative: members propose, r verifies
        assert hows & {"accepted", "bonus", "resampled"}, hows
    proposed = [0, 0]
    for c in pieces:
        for s in c["edge_specens"]["provenance"]:
            if s["member"] is not None:
                proposed[s["member"]] += 1
    assert proposed == stats["proposed_by"]  # the spans agree with the generation's own count


def test_without_the_field_openai_clients_see_nothing_new(client):
    body = {"messages": [{"role": "user", "content": "hello world"}], "max_tokens": 20, "temperature": 0}
    for chunks in (
        stream(client, "/v1/chat/completions", body),
        stream(client, "/v1/chat/completions", {**body, "provenance": False}),
    ):
        pieces = [c for c in chunks if content(c)]
        assert pieces and all(set(c) == OPENAI_CHUNK_KEYS for c in pieces)


def test_provenance_on_text_completions(client):
    chunks = stream(
        client, "/v1/completions", {"prompt": "the value", "max_tokens": 20, "temperature": 0, "provenance": True}
    )
    pieces = [c for c in chunks if content(c)]
    assert pieces and all("".join(s["text"] for s in c["edge_specens"]["provenance"]) == content(c) for c in pieces)


def test_provenance_must_be_a_boolean(client):
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "provenance": "yes"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "provenance"


# ---------------------------------------------------------------------- spans from events (no model)
class _Pieces:
    """What Provenance needs of an ensemble: each token's bytes."""

    def __init__(self, pieces: dict[int, bytes]):
        self.pieces = pieces

    def piece(self, token: int) -> bytes:
        return self.pieces[token]


def _origins(pieces: dict[int, bytes]) -> Provenance:
    return Provenance(_Pieces(pieces), SimpleNamespace(plan=SimpleNamespace(members=(1, 0))))


def test_a_character_split_across_tokens_is_given_to_the_token_that_completes_it():
    p = _origins({5: b"caf", 6: b"\xc3", 7: b"\xa9!"})
    assert p.add(Event(5, "caf", Step(5, 0, "accepted"))) == [
        {"token": 5, "text": "caf", "how": "accepted", "member": 1}  # plan index 0 is ensemble member 1
    ]
    assert p.add(Event(6, "", Step(6, None, "sampled"))) is None  # held back: half a character
    spans = p.add(Event(7, "é!", Step(7, 1, "bonus")))
    assert [(s["token"], s["text"], s["member"]) for s in spans] == [(6, "", None), (7, "é!", 0)]


def test_held_back_text_released_by_the_flush_and_text_cut_by_a_stop_string():
    p = _origins({1: b"a", 2: b"<", 3: b"/"})
    assert p.add(Event(1, "a", Step(1, None, "lookup")))[0]["how"] == "lookup"
    assert p.add(Event(2, "", Step(2, None, "sampled"))) is None  # might start a stop string "</x>"
    assert p.add(Event(3, "", Step(3, None, "resampled"))) is None
    spans = p.add(Event(-1, "</", Step(-1, None, "flush")))  # the end: held text is real after all
    assert [(s["token"], s["text"]) for s in spans] == [(2, "<"), (3, "/")]
    # text that does not match the tokens' own (a stop string cut it): still all accounted for
    spans = split("ab", [({"token": 1}, "abc"), ({"token": 2}, "d")])
    assert "".join(s["text"] for s in spans) == "ab" and spans[-1]["text"] == "ab"
