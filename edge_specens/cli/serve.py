"""`edge-specens serve`: the command around server.run_server (the server package never sees click)."""

from __future__ import annotations

import sys

import click

from ..errors import EdgeSpecensError
from ..server import (
    API_KEY_ENV,
    DEFAULT_HOST,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_QUEUE,
    DEFAULT_PORT,
    bind_socket,
    need_server_extra,
    run_server,
)
from .options import load_ensemble, model_options, pass_opts

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@click.command("serve")
@model_options
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to bind (use 0.0.0.0 to accept other machines; set --api-key then).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="Port to bind.")
@click.option(
    "--api-key",
    envvar=API_KEY_ENV,
    show_envvar=True,
    default=None,
    help="Require 'Authorization: Bearer KEY' on /v1/* (/health stays open).",
)
@click.option(
    "--max-queue",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_QUEUE,
    show_default=True,
    help="Requests that may wait for the ensemble; more get 503 with Retry-After.",
)
@click.option(
    "--max-body",
    type=click.IntRange(min=1024),
    default=DEFAULT_MAX_BODY,
    show_default=True,
    help="Largest request body in bytes; larger ones get 413 before they are read.",
)
@click.option("--alias", "model_name", default=None, help="Model id to report (default: preset or file names).")
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Let web pages from ORIGIN (e.g. http://localhost:3000, or *) call the API from a browser; repeat for more.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="A name clients may use for this server in the Host header besides localhost, 127.0.0.1 and "
    "[::1] (e.g. behind a proxy); repeat for more. On 127.0.0.1 other names get 400 (DNS rebinding).",
)
@click.option("--no-webui", is_flag=True, help="Do not serve the chat page at / (the API is unchanged).")
@pass_opts
def serve(opts: dict) -> None:
    """Serve the ensemble through an OpenAI-compatible HTTP API."""
    need_server_extra()
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
            click.echo(
                f"warning: serving on {host} without an API key; anyone who can reach this port can use it", err=True
            )
        name = opts.get("model_name") or ens.name
        shown = f"[{host}]" if ":" in host else host
        page = "" if opts["no_webui"] else f", chat page at http://{shown}:{port}/"
        click.echo(f"serving {name} at http://{shown}:{port}/v1 (OpenAI-compatible){page}; Ctrl-C stops", err=True)
        try:
            run_server(
                ens,
                host=host,
                port=port,
                api_key=opts.get("api_key"),
                max_queue=opts["max_queue"],
                max_body=opts["max_body"],
                model_name=opts.get("model_name"),
                log_level="info",
                sock=sock,
                cors_origins=opts.get("cors_origins") or (),
                allowed_hosts=opts.get("allowed_hosts") or (),
                webui=not opts["no_webui"],
            )
        except KeyboardInterrupt:  # Ctrl-C, after a clean shutdown: say so, exit 130 (no "aborted")
            click.echo("server stopped", err=True)
            raise click.exceptions.Exit(130) from None
        except (EdgeSpecensError, SystemExit) as e:  # uvicorn exits on a failed startup
            if isinstance(e, SystemExit) and e.code in (0, None):
                raise
            click.echo(f"error: {e if isinstance(e, EdgeSpecensError) else 'the server could not start'}", err=True)
            sys.exit(1)
        finally:
            ens.close()
    finally:
        sock.close()
