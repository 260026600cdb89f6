"""Misbehaving RPC servers for tests/test_remote.py: a server that answers llama.cpp's hello and then
goes silent, and a proxy in front of a real `rpc-server` that stops forwarding on demand.

The hello (remote/endpoint.py): the client sends | command 14 | size 24 (u64) | 24 bytes |; the server
answers | size 28 (u64) | major 7 | minor 0 | patch 0 | pad | 24 bytes |. Both classes serve each
connection on its own thread (the probe's connection, then the helper's) and close everything on stop().
"""

from __future__ import annotations

import select
import socket
import struct
import threading

HELLO_REPLY = struct.pack("<Q", 28) + bytes([7, 0, 0, 0]) + bytes(24)


class _Server:
    def __init__(self) -> None:
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.endpoint = f"127.0.0.1:{self.port}"
        self.stopping = threading.Event()
        self.sockets: list[socket.socket] = []
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.sockets.append(conn)
            self.connections += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()
        for s in [self.srv, *self.sockets]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class HelloThenSilent(_Server):
    """Answers the hello on every connection, then reads nothing and answers nothing."""

    def handle(self, conn: socket.socket) -> None:
        hello = b""
        while len(hello) < 1 + 8 + 24:
            chunk = conn.recv(1 + 8 + 24 - len(hello))
            if not chunk:
                return
            hello += chunk
        conn.sendall(HELLO_REPLY)
        self.stopping.wait()


class StallingProxy(_Server):
    """Forwards to a real server at 127.0.0.1:target until stall() is called; from then on it moves
    no byte either way (the connections stay open)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.stalled = threading.Event()
        super().__init__()

    def stall(self) -> None:
        self.stalled.set()

    def handle(self, conn: socket.socket) -> None:
        up = socket.create_connection(("127.0.0.1", self.target))
        self.sockets.append(up)
        try:
            self._forward(conn, up)
        finally:  # the server serves one client at a time: hang up on it when the client leaves
            for s in (conn, up):
                s.close()

    def _forward(self, conn: socket.socket, up: socket.socket) -> None:
        peer = {conn: up, up: conn}
        while not self.stopping.is_set():
            if self.stalled.is_set():
                self.stopping.wait()
                return
            ready, _, _ = select.select([conn, up], [], [], 0.05)
            for s in ready:
                if self.stalled.is_set():
                    break
                try:
                    data = s.recv(1 << 16)
                    if not data:
                        return
                    peer[s].sendall(data)
                except OSError:
                    return
