"""Start the OpenAI-compatible server: bind a socket, build the app, run uvicorn.

The app itself lives in app.py (request bodies in schema.py, the thread that owns the ensemble
in worker.py). FastAPI and uvicorn are only imported when a server is built, so the rest of the
package (and the CLI) works without the `server` extra. The `serve` command is cli/serve.py.
"""

from __future__ import annotations

import socket

from ..errors import EdgeSpecensError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_QUEUE = 64
API_KEY_ENV = "EDGE_SPECENS_API_KEY"


class ServerStartError(EdgeSpecensError):
    """The HTTP server could not start (e.g. the port is taken)."""


def need_server_extra() -> None:
    """Raise a clear error when the `server` extra (FastAPI, uvicorn) is not installed."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ServerStartError(
            f"the server needs FastAPI and uvicorn ({e.name} is missing): pip install 'edge-specens[server]'"
        ) from None


def create_app(
    ens,
    *,
    api_key: str | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    model_name: str | None = None,
    cors_origins=(),
):
    """The ASGI app serving `ens` (see app.create_app)."""
    need_server_extra()
    from .app import create_app as _create_app

    return _create_app(ens, api_key=api_key, max_queue=max_queue, model_name=model_name, cors_origins=cors_origins)


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (raises OSError: address in use, unknown host, ...)."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run_server(
    ens,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    api_key: str | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    model_name: str | None = None,
    log_level: str = "info",
    sock: socket.socket | None = None,
    cors_origins=(),
) -> None:
    """Serve `ens` until interrupted (Ctrl-C). `sock`: an already bound socket to serve on."""
    import uvicorn

    app = create_app(ens, api_key=api_key, max_queue=max_queue, model_name=model_name, cors_origins=cors_origins)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    server.run(sockets=[sock] if sock is not None else None)
    if not server.started:
        raise ServerStartError(f"the server could not start on {host}:{port}")
