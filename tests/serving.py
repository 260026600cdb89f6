"""Helpers for tests that talk to a running server: wait until it answers, or start `serve` in a
subprocess and learn its address."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import httpx

# Headless chromium for the browser tests and scripts/webui_screenshot.py: no background connections
# (this network refuses them, and a test must not depend on them), a fresh profile given by the caller.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def wait_healthy(url: str, timeout: float = 30.0, what: str = "the server did not answer /health") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def start_serve(args: list[str], timeout: float = 120.0, **popen_kw) -> tuple[subprocess.Popen, str, list[str]]:
    """`edge-specens serve ARGS --port 0` in a subprocess (stderr piped): (process, base URL, the
    stderr lines read up to the "serving ... at URL" line), once /health answers."""
    popen_kw.setdefault("stdout", subprocess.DEVNULL)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_specens", "serve", *args, "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **popen_kw,
    )
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    url = None
    while url is None:
        line = proc.stderr.readline()
        assert line and time.monotonic() < deadline, "the server did not start:\n" + "".join(lines)
        lines.append(line)
        m = re.search(r"at (http://[^ ]+)/v1", line)
        url = m.group(1) if m else None
    wait_healthy(url, timeout)
    return proc, url, lines


def free_port() -> int:
    """A loopback port nobody listens on now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
