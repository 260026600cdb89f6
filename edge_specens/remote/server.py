"""`edge-specens rpc-server`: serve this machine's CPU or GPU to an ensemble on another machine.

llama.cpp's server call blocks for good and has no stop function, so it runs in a child process
(`python -m edge_specens.remote.server ...`) that this parent starts, watches, and stops on
Ctrl-C or SIGTERM. The child dies with its parent, even one killed with `kill -9` (lifeline.py): an
orphan would keep serving the port to anyone, unsupervised, and block a restart. It is llama.cpp's
own RPC server (ggml-rpc), from the same llama-cpp-python install, so a Raspberry Pi needs nothing
but `pip install edge-specens` built with RPC.

llama.cpp's RPC server has no authentication and no encryption: anyone who can reach the port
can run code-sized graphs on this machine and read what it computes. It binds to 127.0.0.1 by
default; reach it from another machine through an SSH tunnel (README: Members on other machines).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from ..errors import InvalidParameterError
from .endpoint import Endpoint
from .lifeline import Lifeline, die_with_parent, spawn

SECURITY_WARNING = """\
warning: {host} is not a loopback address. llama.cpp's RPC server has no authentication and no
encryption: anyone who can reach port {port} can use this machine's {what} and see what it computes.
Serve only on a network you trust, or keep the default --host 127.0.0.1 and tunnel over SSH from
the machine that runs the ensemble:
    ssh -N -L {port}:127.0.0.1:{port} user@this-machine     # then use -m model.gguf@127.0.0.1:{port}"""


def default_cache() -> Path:
    """Where the server keeps tensors it was sent (so a reconnect does not resend the weights)."""
    from ..fetch import cache_dir

    return cache_dir() / "rpc"


def check_bindable(endpoint: Endpoint) -> str:
    """The IPv4 address llama.cpp will bind (it takes literals only), after checking the port is
    free: llama.cpp would only say "Failed to create server socket"."""
    host = "127.0.0.1" if endpoint.host == "localhost" else endpoint.host
    try:
        socket.inet_aton(host)
        if host.count(".") != 3:
            raise OSError
    except OSError:
        raise InvalidParameterError(
            f"--host {endpoint.host!r}: llama.cpp's RPC server binds an IPv4 address (e.g. 127.0.0.1, "
            "0.0.0.0 or this machine's LAN address)"
        ) from None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as llama.cpp does
        try:
            s.bind((host, endpoint.port))
        except OSError as e:
            raise InvalidParameterError(f"cannot listen on {host}:{endpoint.port}: {e.strerror or e}") from None
    return host


def run(endpoint: Endpoint, threads: int, devices: list[str], cache: Path | None, echo=print) -> int:
    """Serve until Ctrl-C or SIGTERM; the exit status."""
    from .backend import local_devices, require_rpc

    require_rpc()
    host = check_bindable(endpoint)
    available = local_devices()
    for name in devices:
        if name not in [n for n, _, _ in available]:
            raise InvalidParameterError(
                f"--device {name!r}: no such device here; the devices are {', '.join(n for n, _, _ in available)}"
            )
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "edge_specens.remote.server", f"{host}:{endpoint.port}", str(threads)]
    args += [str(cache) if cache else "", ",".join(devices)]
    stopping: list[int] = []
    child: subprocess.Popen | None = None
    lifeline = Lifeline()

    def stop(sig, frame):
        stopping.append(sig)
        if child is not None:
            child.terminate()

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if not Endpoint(host, endpoint.port).is_loopback:
            gpu = [n for n, _, cpu in available if not cpu]
            echo(SECURITY_WARNING.format(host=host, port=endpoint.port, what="GPU" if gpu else "CPU"))
        if not stopping:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
            child = spawn(args + lifeline.argv(), lifeline, env=env)
            if stopping:  # a signal between Popen and the assignment
                child.terminate()
            rc = child.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        lifeline.close()
    if stopping:
        echo("rpc-server stopped")
        return 0
    return rc or 1  # llama.cpp's server returns only when it could not serve


def _child(argv: list[str]) -> None:
    """The server process: llama.cpp's blocking ggml_backend_rpc_start_server."""
    from ..errors import EdgeSpecensError
    from .backend import serve

    endpoint, threads, cache, devices, lifeline_fd, parent_pid = argv
    die_with_parent(int(lifeline_fd), int(parent_pid))  # first: the parent may be gone already
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us (SIGTERM): one clean message
    try:
        serve(endpoint, cache or None, int(threads), [d for d in devices.split(",") if d])
    except EdgeSpecensError as e:
        print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    _child(sys.argv[1:])
