"""Start the OpenAI-compatible server: bind a socket, build the app, run uvicorn.

The app itself lives in app.py (request bodies in schema.py, the thread that owns the ensemble
in worker.py). FastAPI and uvicorn are only imported when a server is built, so the rest of the
package (and the CLI) works without the `server` extra. The `serve` command is cli/serve.py.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import signal
import socket
import time
from collections.abc import Iterable

from ..errors import EdgeSpecensError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_QUEUE = 64
DEFAULT_MAX_BODY = 4 * 2**20  # bytes: a full 128k-token chat history in JSON fits several times over
DEFAULT_MAX_REQUESTS = 256  # requests in progress at once (not connections); more get 503
MAX_CONNECTIONS = 4096  # open connections; at this many a new one closes the longest-idle one
FD_RESERVE = 128  # file descriptors kept for everything but connections (and a burst of accepts)
DEFAULT_KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
HEADER_TIMEOUT_S = 10.0  # a connection must send a request's line and headers within this
API_KEY_ENV = "EDGE_SPECENS_API_KEY"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")  # what a loopback server answers to in Host


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


def create_app(ens, **options):
    """The ASGI app serving `ens`; options as app.create_app (api_key, max_queue, model_name,
    cors_origins, max_body, allowed_hosts, max_requests, webui)."""
    need_server_extra()
    from .app import create_app as _create_app

    return _create_app(ens, **options)


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


def allowed_hosts_for(host: str, extra: Iterable[str] = ()) -> tuple[str, ...] | None:
    """The Host header names a server bound to `host` answers (the app refuses the rest: DNS
    rebinding), or None for no check. A loopback address gets localhost, 127.0.0.1, ::1 and itself;
    an address other machines reach has no list unless `extra` (--allowed-host) gives one, since
    the names they use for it cannot be known here."""
    extra = tuple(extra)
    if not (_is_loopback(host) or extra):
        return None
    return (*LOOPBACK_NAMES, host, *extra)


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_server(
    ens,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    log_level: str = "info",
    sock: socket.socket | None = None,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    allowed_hosts: Iterable[str] = (),
    **app_options,
) -> None:
    """Serve `ens` until interrupted (Ctrl-C). `sock`: an already bound socket to serve on;
    app_options as create_app. At most max_requests requests in progress (more get 503); open
    connections are capped (MAX_CONNECTIONS, or what the open-file limit allows) by closing the
    longest-idle one, never by refusing requests (20,000 idle connections used to exhaust the file
    descriptors, and 256 to lock every client out). On a loopback address, requests must name the
    server in their Host header (allowed_hosts adds names)."""
    import uvicorn

    _raise_open_file_limit()
    _quiet_accept_errors()
    app = create_app(
        ens, allowed_hosts=allowed_hosts_for(host, allowed_hosts), max_requests=max_requests, **app_options
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        limit_concurrency=None,  # uvicorn's counts idle connections: the app counts requests instead
        timeout_keep_alive=DEFAULT_KEEP_ALIVE_S,
        http=_guarded_h11(connection_limit()),
    )
    server = _Server(config, on_exit=app.state.worker.begin_shutdown)
    server.run(sockets=[sock] if sock is not None else None)
    if not server.started:
        raise ServerStartError(f"the server could not start on {host}:{port}")
    if server.interrupted:
        # uvicorn re-raises a caught Ctrl-C after a clean shutdown, but through asyncio's own SIGINT
        # handler, and once in a while that KeyboardInterrupt was lost (exit status 0, not 130).
        raise KeyboardInterrupt


def _Server(config, on_exit):
    """uvicorn's server, but a stop signal first stops our worker: open streams end at once with an
    error event and waiting requests get 503 `shutting_down`, so the server exits within a second or
    two instead of cutting streams (and printing CancelledError tracebacks) when its grace period ends."""
    import uvicorn

    class Server(uvicorn.Server):
        interrupted = False  # a Ctrl-C (SIGINT) stopped it

        def handle_exit(self, sig, frame) -> None:
            self.interrupted = self.interrupted or sig == signal.SIGINT
            on_exit()
            super().handle_exit(sig, frame)

    return Server(config)


def connection_limit() -> int:
    """How many connections may be open: MAX_CONNECTIONS, or fewer when the open-file limit is low
    (FD_RESERVE descriptors stay for the models, logs and a burst of accepts)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):  # pragma: no cover - not on this platform
        return MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft - FD_RESERVE))


def _guarded_h11(max_connections: int = MAX_CONNECTIONS):
    """uvicorn's h11 protocol, plus
    - a deadline for a request's headers: a connection that sends no complete request line and
      headers within HEADER_TIMEOUT_S (idle, or trickling bytes slowloris style) is closed. uvicorn
      itself only times out idle connections between requests, and resets even that on every byte;
    - a cap on open connections: when a new one makes more than max_connections, the connection
      that has waited longest for a request's headers (a fresh or a keep-alive one) is closed. So
      idle connections cost the server nothing it needs: a client that sends its request at once is
      never the one closed, however many idle sockets someone holds (a per-address cap would not
      help: the flood and the real clients all come from 127.0.0.1 on a local server).
    Falls back to plain "h11" if uvicorn's internals are not as expected."""
    try:
        from uvicorn.protocols.http.h11_impl import H11Protocol
    except ImportError:  # pragma: no cover - uvicorn without h11
        return "auto"
    if not all(hasattr(H11Protocol, n) for n in ("connection_made", "handle_events", "on_response_complete")):
        return "h11"  # pragma: no cover - an uvicorn this code was not written against

    idle: dict[GuardedH11, None] = {}  # this server's connections waiting for headers, longest first

    class GuardedH11(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _armed_for: object = None

        def _arm(self) -> None:
            self._disarm()
            self._armed_for = getattr(self, "cycle", None)  # a new request replaces the cycle
            self._deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._late)
            idle[self] = None

        def _disarm(self) -> None:
            idle.pop(self, None)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _late(self) -> None:
            self._deadline = None
            idle.pop(self, None)
            if getattr(self, "cycle", None) is self._armed_for and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()
            if len(self.connections) > max_connections:
                oldest = next(iter(idle))  # self at the latest: every other connection is busy
                oldest._disarm()
                if not oldest.transport.is_closing():
                    oldest.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self._deadline is not None and getattr(self, "cycle", None) is not self._armed_for:
                self._disarm()  # a request's headers are in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            cycle = getattr(self, "cycle", None)  # a pipelined request may have started in there
            if not self.transport.is_closing() and (cycle is None or cycle.response_complete):
                self._arm()  # the next request on this keep-alive connection gets the same deadline

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11


def _raise_open_file_limit() -> None:
    """Every connection is a file descriptor; the usual soft limit (1024) is far below the hard one."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 65536), hard))
    except (ImportError, ValueError, OSError):  # not on this platform, or not allowed: keep the limit
        pass


class _OncePerMinute(logging.Filter):
    """asyncio logs a traceback for every failed accept() when file descriptors run out (630,783 of
    them in 40 s under a connection flood): keep one a minute, without the traceback."""

    def __init__(self):
        super().__init__()
        self.last = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "_start_serving" in message:
            # asyncio retries accept() a second after running out of descriptors; a retry that fires
            # after shutdown closed the socket fails harmlessly, once per retry, with a traceback
            return False
        if "accept" not in message:
            return True
        now = time.monotonic()
        if now - self.last < 60:
            return False
        self.last = now
        record.exc_info = None
        record.exc_text = None
        return True


@functools.cache
def _quiet_accept_errors() -> None:
    logging.getLogger("asyncio").addFilter(_OncePerMinute())
