"""`edge-specens serve`: the ensemble behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

    edge-specens serve -p qwen2.5-coder-duo [--host 127.0.0.1] [--port 8080] [--api-key KEY]

Endpoints: GET /health, GET /v1/models, POST /v1/completions, POST /v1/chat/completions (both
with `stream: true`). The app itself lives in server_app.py (schemas in server_schema.py, the
thread that owns the ensemble in server_worker.py); FastAPI and uvicorn are only imported when a
server is built, so the rest of the CLI works without the `server` extra.
"""

from __future__ import annotations

import socket
import sys

import click

from .cli_options import load_ensemble, model_options, pass_opts
from .errors import EdgeSpecensError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_QUEUE = 64
API_KEY_ENV = "EDGE_SPECENS_API_KEY"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ServerStartError(EdgeSpecensError):
    """The HTTP server could not start (e.g. the port is taken)."""


def _need_server_extra():
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise click.ClickException(
            f"the server needs FastAPI and uvicorn ({e.name} is missing): pip install 'edge-specens[server]'"
        ) from None


def create_app(ens, *, api_key: str | None = None, max_queue: int = DEFAULT_MAX_QUEUE, model_name: str | None = None,
               cors_origins=()):
    """The ASGI app serving `ens` (see server_app.create_app)."""
    _need_server_extra()
    from .server_app import create_app as _create_app
    return _create_app(ens, api_key=api_key, max_queue=max_queue, model_name=model_name, cors_origins=cors_origins)


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (raises OSError: address in use, unknown host, ...)."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run_server(ens, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, api_key: str | None = None,
               max_queue: int = DEFAULT_MAX_QUEUE, model_name: str | None = None, log_level: str = "info",
               sock: socket.socket | None = None, cors_origins=()) -> None:
    """Serve `ens` until interrupted (Ctrl-C). `sock`: an already bound socket to serve on."""
    import uvicorn

    app = create_app(ens, api_key=api_key, max_queue=max_queue, model_name=model_name, cors_origins=cors_origins)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    server.run(sockets=[sock] if sock is not None else None)
    if not server.started:
        raise ServerStartError(f"the server could not start on {host}:{port}")


@click.command("serve")
@model_options
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to bind (use 0.0.0.0 to accept other machines; set --api-key then).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="Port to bind.")
@click.option("--api-key", envvar=API_KEY_ENV, show_envvar=True, default=None,
              help="Require 'Authorization: Bearer KEY' on /v1/* (/health stays open).")
@click.option("--max-queue", type=click.IntRange(min=1), default=DEFAULT_MAX_QUEUE, show_default=True,
              help="Requests that may wait for the ensemble; more get 503 with Retry-After.")
@click.option("--alias", "model_name", default=None, help="Model id to report (default: preset or file names).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Let web pages from ORIGIN (e.g. http://localhost:3000, or *) call the API from a browser; "
                   "repeat for more.")
@pass_opts
def serve(opts: dict) -> None:
    """Serve the ensemble through an OpenAI-compatible HTTP API."""
    _need_server_extra()
    host, port = opts["host"], opts["port"]
    try:  # bind first: a taken port should not cost a model load
        sock = bind_socket(host, port)
    except OSError as e:
        click.echo(f"error: cannot listen on {host}:{port}: {e.strerror or e}", err=True)
        sys.exit(1)
    port = sock.getsockname()[1]  # the real one when --port 0 asked for any free port
    try:
        try:
            ens = load_ensemble(opts)
        except EdgeSpecensError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        if host not in _LOOPBACK and not opts.get("api_key"):
            click.echo(f"warning: serving on {host} without an API key; anyone who can reach this port can use it",
                       err=True)
        name = opts.get("model_name") or ens.name
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"serving {name} at http://{shown}:{port}/v1 (OpenAI-compatible); Ctrl-C stops", err=True)
        try:
            run_server(ens, host=host, port=port, api_key=opts.get("api_key"), max_queue=opts["max_queue"],
                       model_name=opts.get("model_name"), log_level="info", sock=sock,
                       cors_origins=opts.get("cors_origins") or ())
        except (EdgeSpecensError, SystemExit) as e:  # uvicorn exits on a failed startup
            if isinstance(e, SystemExit) and e.code in (0, None):
                raise
            click.echo(f"error: {e if isinstance(e, EdgeSpecensError) else 'the server could not start'}", err=True)
            sys.exit(1)
        finally:
            ens.close()
    finally:
        sock.close()
