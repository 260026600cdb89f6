"""llama.cpp's RPC backend through ctypes: is it built in, the devices of a server, serving.

llama-cpp-python has no binding for ggml-rpc (its `rpc_servers` option is silently ignored since
0.3.x), so this goes through ggml's backend registry, as llama.cpp's own `--rpc` does:
`ggml_backend_reg_by_name("RPC")`, then the registry's proc addresses for
`ggml_backend_rpc_add_server` (client) and `ggml_backend_rpc_start_server` (server). Everything
here may abort the process on a network failure, so the client side only ever runs in a member's
helper process (remote/helper.py), and the server in `edge-specens rpc-server`'s child process.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence

from ..errors import InvalidParameterError, RpcUnavailableError

REBUILD = (
    'CMAKE_ARGS="-DGGML_RPC=on" .venv/bin/pip install --force-reinstall --no-deps --no-cache-dir '
    '"llama-cpp-python>=0.3.36,<0.4"   (or: make clean install; the Makefile turns RPC on)'
)
_CPU = 0  # enum ggml_backend_dev_type: GGML_BACKEND_DEVICE_TYPE_CPU


@functools.cache
def _lib():
    from ..member import _llama

    lib = _llama().llama_cpp._lib
    v, s, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    for name, res, args in (
        ("ggml_backend_load_all", None, []),
        ("ggml_backend_reg_by_name", v, [s]),
        ("ggml_backend_reg_get_proc_address", v, [v, s]),
        ("ggml_backend_reg_dev_count", i, [v]),
        ("ggml_backend_reg_dev_get", v, [v, i]),
        ("ggml_backend_dev_count", i, []),
        ("ggml_backend_dev_get", v, [i]),
        ("ggml_backend_dev_by_name", v, [s]),
        ("ggml_backend_dev_name", s, [v]),
        ("ggml_backend_dev_description", s, [v]),
        ("ggml_backend_dev_type", ctypes.c_int, [v]),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def supports_rpc() -> bool:
    """Whether this llama-cpp-python was built with -DGGML_RPC=on."""
    from ..member import _llama

    return bool(_llama().llama_supports_rpc())


def require_rpc() -> None:
    if not supports_rpc():
        raise RpcUnavailableError(
            "this llama-cpp-python was built without llama.cpp's RPC backend, which members on other "
            f"machines need; rebuild it: {REBUILD}"
        )


def _rpc_proc(name: str):
    require_rpc()
    lib = _lib()
    reg = lib.ggml_backend_reg_by_name(b"RPC")
    address = lib.ggml_backend_reg_get_proc_address(reg, name.encode()) if reg else None
    if not address:
        raise RpcUnavailableError(f"llama.cpp's RPC backend has no {name}; rebuild: {REBUILD}")
    return address


def server_devices(endpoint: str) -> ctypes.Array:
    """The devices of the RPC server at `endpoint`, as the NULL-terminated array that
    llama_model_params.devices wants (keep it alive while the model lives). Connects: on failure
    llama.cpp aborts the process, so call this only after remote.endpoint.probe, in a helper."""
    add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(_rpc_proc("ggml_backend_rpc_add_server"))
    reg = add_server(endpoint.encode())
    lib = _lib()
    n = lib.ggml_backend_reg_dev_count(reg)
    return (ctypes.c_void_p * (n + 1))(*[lib.ggml_backend_reg_dev_get(reg, i) for i in range(n)], None)


def local_devices() -> list[tuple[str, str, bool]]:
    """(name, description, is_cpu) of every device this machine's llama.cpp can run on."""
    lib = _lib()
    lib.ggml_backend_load_all()
    out = []
    for i in range(lib.ggml_backend_dev_count()):
        d = lib.ggml_backend_dev_get(i)
        out.append(
            (
                lib.ggml_backend_dev_name(d).decode(),
                lib.ggml_backend_dev_description(d).decode(),
                lib.ggml_backend_dev_type(d) == _CPU,
            )
        )
    return [d for d in out if not d[0].startswith("RPC")]


def serve(endpoint: str, cache_dir: str | None, threads: int, device_names: Sequence[str]) -> None:
    """Serve this machine's devices to remote clients; blocks for good (llama.cpp has no stop call),
    so run it in a process of its own. Devices by name, default: every GPU, else the CPU."""
    start = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p)(
        _rpc_proc("ggml_backend_rpc_start_server")
    )
    lib = _lib()
    available = local_devices()
    names = list(device_names) or [n for n, _, cpu in available if not cpu] or [n for n, _, cpu in available if cpu]
    devices = []
    for name in names:
        d = lib.ggml_backend_dev_by_name(name.encode())
        if not d:
            raise InvalidParameterError(
                f"no device {name!r} here; the devices are: {', '.join(n for n, _, _ in available)}"
            )
        devices.append(d)
    array = (ctypes.c_void_p * len(devices))(*devices)
    start(endpoint.encode(), cache_dir.encode() if cache_dir else None, threads, len(devices), array)
