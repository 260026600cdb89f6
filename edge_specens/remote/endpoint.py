"""Where a remote member runs: parse "host:port", and check an endpoint before llama.cpp sees it.

llama.cpp's RPC client aborts the whole process (GGML_ABORT) when it cannot connect or the server
answers with another protocol version. So every endpoint is probed here first, with a timeout: a
TCP connect, then the RPC hello (the first message of llama.cpp's protocol), whose reply carries
the server's protocol version. What fails becomes an EndpointError naming the endpoint.

The hello, from ggml-rpc.cpp (protocol 7.0.0, llama.cpp 0c1e570 as vendored by llama-cpp-python
0.3.36): the client sends | command 14 (1 byte) | size 24 (u64) | 24 capability bytes (zeros: plain
TCP) |; the server answers | size 28 (u64) | major | minor | patch | pad | 24 capability bytes |.
The client refuses a server whose major differs or whose minor is newer than its own.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from ..errors import EndpointError, InvalidParameterError

DEFAULT_PORT = 50052  # llama.cpp's rpc-server default
PROTOCOL = (7, 0)  # ggml-rpc.h RPC_PROTO_MAJOR_VERSION, RPC_PROTO_MINOR_VERSION of the pinned llama.cpp
_HELLO = 14
_CAPS = 24
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_endpoint(text: str) -> Endpoint:
    """'host:port' (a hostname or an IPv4 address). Refused at once, with why: a missing or bad
    port, and IPv6, which llama.cpp's RPC client cannot dial in this version (IPv4 sockets only)."""
    text = str(text).strip()
    if text.startswith("["):
        raise InvalidParameterError(
            f"RPC endpoint {text!r}: llama.cpp's RPC client speaks IPv4 only; use an IPv4 address or a "
            "hostname, or an SSH tunnel to 127.0.0.1 (README: Members on other machines)"
        )
    if text.count(":") > 1:
        raise InvalidParameterError(
            f"RPC endpoint {text!r} looks like an IPv6 address; they need brackets ([::1]:50052), and "
            "llama.cpp's RPC client speaks IPv4 only: use an IPv4 address or a hostname"
        )
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise InvalidParameterError(f"RPC endpoint {text!r} must be HOST:PORT (e.g. 192.168.1.20:{DEFAULT_PORT})")
    if not port_text:
        raise InvalidParameterError(f"RPC endpoint {text!r} has no port after ':' (e.g. {host}:{DEFAULT_PORT})")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InvalidParameterError(f"RPC endpoint {text!r}: the port must be a number from 1 to 65535")
    if any(c.isspace() or c in "/@" for c in host):
        raise InvalidParameterError(f"RPC endpoint {text!r}: {host!r} is not a host name or address")
    return Endpoint(host, int(port_text))


def split_model_reference(text: str) -> tuple[str, Endpoint | None]:
    """'model.gguf@host:port' -> ('model.gguf', endpoint); a plain path -> (path, None). The grammar of
    every model reference lives in sources/reference.py (`split_placement`); kept here so existing
    imports keep working."""
    from ..sources.reference import split_placement

    return split_placement(text)


def probe(endpoint: Endpoint, timeout: float = PROBE_TIMEOUT_S) -> tuple[int, int, int]:
    """Connect, say hello, close; the server's protocol version. EndpointError when nothing listens,
    the host does not answer within `timeout`, the server speaks something else or another version.

    llama.cpp's server serves one client at a time: while another client (another ensemble, or a
    member of this one) is connected, the hello is not answered and this says the server is busy."""
    where = str(endpoint)
    try:
        infos = socket.getaddrinfo(endpoint.host, endpoint.port, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise EndpointError(f"RPC server {where}: cannot resolve {endpoint.host!r} ({e.strerror})", where) from None
    address = (str(infos[0][4][0]), endpoint.port)
    try:
        sock = socket.create_connection(address, timeout=timeout)
    except TimeoutError:
        raise EndpointError(
            f"RPC server {where}: no answer within {timeout:g} s (host down or firewalled?)", where
        ) from None
    except OSError as e:
        raise EndpointError(
            f"RPC server {where}: cannot connect ({e.strerror or e}); is `edge-specens rpc-server` running there?",
            where,
        ) from None
    with sock:
        try:
            sock.sendall(bytes([_HELLO]) + struct.pack("<Q", _CAPS) + bytes(_CAPS))
            reply = _receive(sock, 8 + 4 + _CAPS)
        except TimeoutError:
            raise EndpointError(
                f"RPC server {where}: connected, but no RPC hello within {timeout:g} s (another client is "
                "using it: llama.cpp's server serves one at a time; or it is not an RPC server)",
                where,
            ) from None
        except OSError as e:
            raise EndpointError(
                f"RPC server {where}: the connection closed during the RPC hello ({e.strerror or e}); "
                "is it an edge-specens/llama.cpp rpc-server?",
                where,
            ) from None
    size = struct.unpack("<Q", reply[:8])[0]
    if size != 4 + _CAPS:
        raise EndpointError(
            f"RPC server {where}: it does not speak llama.cpp's RPC protocol {PROTOCOL[0]}.x "
            "(wrong reply to the hello: another service, or a much older llama.cpp)",
            where,
        )
    major, minor, patch = reply[8], reply[9], reply[10]
    if major != PROTOCOL[0] or minor > PROTOCOL[1]:
        raise EndpointError(
            f"RPC server {where}: protocol {major}.{minor}.{patch}, this client speaks {PROTOCOL[0]}.{PROTOCOL[1]}; "
            "run the same llama-cpp-python (pip show llama-cpp-python) on both machines",
            where,
        )
    return major, minor, patch


def _receive(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("closed by the server")
        data += chunk
    return data
