"""The OpenAI-compatible HTTP server (FastAPI + uvicorn, imported only when a server is built).

    create_app(ens, ...)   the ASGI app: /health, /v1/models, /v1/completions, /v1/chat/completions
    run_server(ens, ...)   serve it with uvicorn until interrupted
One worker thread owns the ensemble (worker.py); HTTP handlers only hand jobs over.
"""

from .run import (
    API_KEY_ENV,
    DEFAULT_HOST,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_QUEUE,
    DEFAULT_PORT,
    ServerStartError,
    bind_socket,
    create_app,
    need_server_extra,
    run_server,
)

__all__ = [
    "DEFAULT_MAX_BODY",
    "API_KEY_ENV",
    "DEFAULT_HOST",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_PORT",
    "ServerStartError",
    "bind_socket",
    "create_app",
    "need_server_extra",
    "run_server",
]
