"""Real servers on loopback ports for the client tests (openai, ollama, httpx), over tiny GGUF members.

`running_app(app)` serves an app with uvicorn in a background thread (test_server.py's
`running_server` too); `fim_duo(dir)` writes a pair of tiny models that share a vocabulary with fill-in-the-middle
tokens (gguf_factory.FIM_TOKENS), so the Ollama, /infill and suffix paths have a FIM model to talk to;
`tool_duo(dir)` a pair whose template renders tools (gguf_factory.TOOLS_CHAT_TEMPLATE).
"""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from pathlib import Path

from gguf_factory import SIMPLE_CHAT_TEMPLATE, TOOLS_CHAT_TEMPLATE, write_tiny_llama
from serving import wait_healthy


def fim_duo(directory: Path) -> list[Path]:
    return [
        write_tiny_llama(directory / "fim-small.gguf", seed=1, n_embd=32, chat_template=SIMPLE_CHAT_TEMPLATE, fim=True),
        write_tiny_llama(
            directory / "fim-big.gguf", seed=2, n_embd=64, n_layer=3, chat_template=SIMPLE_CHAT_TEMPLATE, fim=True
        ),
    ]


def tool_duo(directory: Path) -> list[Path]:
    """A tiny pair whose chat template renders tools and <tool_call> blocks (gguf_factory.TOOLS_CHAT_TEMPLATE)."""
    return [
        write_tiny_llama(directory / "tools-small.gguf", seed=1, n_embd=32, chat_template=TOOLS_CHAT_TEMPLATE),
        write_tiny_llama(directory / "tools-big.gguf", seed=2, n_embd=64, n_layer=3, chat_template=TOOLS_CHAT_TEMPLATE),
    ]


def load(paths, n_ctx: int = 512):
    from edge_specens import Ensemble

    return Ensemble.from_paths([str(p) for p in paths], n_ctx=n_ctx, kv_f32=True, n_threads=1, n_threads_batch=1)


@contextmanager
def running_app(app):
    """uvicorn serving `app` on a free 127.0.0.1 port in a background thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_healthy(url, 20, "server did not start")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        assert not thread.is_alive(), "server did not stop"
        assert not app.state.worker.alive, "worker thread outlived the server"
