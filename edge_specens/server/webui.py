"""The chat page at `/` (serve --no-webui leaves it out): static files, and what it shows of the ensemble.

The page is a few static files shipped as package data in `webui/` beside this module (its
Markdown renderer, highlighter and sanitizer vendored in `webui/vendor/` with their licences), so
it needs no build step and nothing from the network. Every file goes out with a Content-Security-
Policy that allows only this server's own scripts, styles and API: should anything a model writes
ever reach the page's HTML unescaped, an inline script or an `onerror=` attribute still cannot run.

Only the files found in `webui/` when the app is built are served, by exact name (no path is
ever joined from a request). `/webui/ensemble.json` tells the page what it shows in its header
(members, sizes, weights, placement) and which defaults its settings start from; with an API key
set it needs the key, like /v1/*.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .._version import __version__
from ..params import STRATEGIES, SamplingParams
from .schema import error_body

WEBUI_DIR = Path(__file__).with_name("webui")
ASSET_PREFIX = "/webui/"
ENSEMBLE_PATH = "/webui/ensemble.json"  # not /props: llama-server's /props has a shape of its own
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # a new version of the package shows its new page at once
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}


def webui_files(root: Path = WEBUI_DIR) -> dict[str, Path]:
    """The files the page may load, by the name they have under /webui/ ("app.js", "vendor/marked.umd.js")."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath, n)
            rel = p.relative_to(root).as_posix()
            if p.suffix in _TYPES:
                out[rel] = p
    return out


def mount_webui(app: FastAPI, *, api_key: str | None = None, model_name: str | None = None) -> None:
    """Add the chat page to `app` (which serves app.state.ensemble): `/` (index.html), its files
    under /webui/, and what it shows of the ensemble at ENSEMBLE_PATH."""
    ens = app.state.ensemble
    name = model_name or ens.name
    key = api_key.encode() if api_key else None
    files = webui_files()
    if "index.html" not in files:  # a broken install: fail when the server is built, not at the first visit
        raise RuntimeError(f"the chat page's files are missing from {WEBUI_DIR} (reinstall edge-specens)")
    cache: dict[str, bytes] = {}

    def send(rel: str) -> Response:
        body = cache.get(rel)
        if body is None:
            body = cache[rel] = files[rel].read_bytes()
        media = _TYPES.get(files[rel].suffix, "text/plain; charset=utf-8")
        return Response(body, media_type=media, headers=SECURITY_HEADERS)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index():
        return send("index.html")

    @app.api_route(ENSEMBLE_PATH, methods=["GET", "HEAD"], include_in_schema=False)
    async def ensemble(request: Request):
        if key is not None and not _has_key(request, key):
            return JSONResponse(
                error_body("missing or invalid API key: send 'Authorization: Bearer <key>'", code="invalid_api_key"),
                status_code=401,
                headers={"WWW-Authenticate": "Bearer", **SECURITY_HEADERS},
            )
        return JSONResponse(ensemble_info(ens, name, api_key_required=key is not None), headers=SECURITY_HEADERS)

    @app.api_route(ASSET_PREFIX + "{rel:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def asset(rel: str):
        if rel not in files:
            return JSONResponse(error_body(f"no such file: {ASSET_PREFIX}{rel}", code="not_found"), status_code=404)
        return send(rel)


def _has_key(request: Request, key: bytes) -> bool:
    scheme, _, token = request.headers.get("authorization", "").encode("latin-1").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key)


def ensemble_info(ens, name: str, api_key_required: bool = False) -> dict:
    """What the page shows in its header (members, how they combine, where they run) and the
    defaults its settings start from (the server's own: what a request that leaves a field out gets)."""
    spec = ens.spec
    members = []
    for k, m in enumerate(ens.members):
        info = {
            "index": k,
            "name": m.name,
            "device": _device(m),
            "n_params": _n_params(m),
            "file_bytes": _file_bytes(m),
        }
        if spec.method == "cd":
            info["role"] = "expert" if k == 0 else "amateur"
        elif k < len(spec.weights):
            info["weight"] = spec.weights[k]
        members.append(info)
    d = SamplingParams()
    return {
        "server": "edge-specens",
        "version": __version__,
        "model": name,
        "n_ctx": ens.n_ctx,
        "method": spec.method,
        "mu": spec.mu if spec.method == "cd" else None,
        "alpha": spec.alpha if spec.method == "cd" else None,
        "gamma": list(ens.default_gamma) if ens.default_gamma else None,
        "members": members,
        "strategies": list(STRATEGIES),
        "defaults": {
            "temperature": d.temperature,
            "top_k": d.top_k,
            "top_p": d.top_p,
            "min_p": d.min_p,
            "seed": d.seed,
            "max_tokens": None,  # the server's default: until the context is full
            "strategy": "auto",
        },
        "provenance": True,  # streams say where each token came from when a request asks
        "api_key_required": api_key_required,
    }


def _device(m) -> str:
    try:
        return str(m.device)
    except Exception:  # a remote member that is reconnecting still has a place to show
        return "?"


def _n_params(m) -> int | None:
    try:
        return int(m.n_params)
    except Exception:  # fakes and lost remote members
        return None


def _file_bytes(m) -> int | None:
    path = getattr(m, "path", None)
    try:
        return os.path.getsize(path) if path is not None else None
    except OSError:
        return None
