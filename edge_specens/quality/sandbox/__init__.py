"""Run model-written code and its tests so that it can neither hurt the machine nor fake its verdict.

Layers, outermost first (docs/design.md §12 has the table of what each platform gets):

1. The operating system (boundary.py). On Linux, bubblewrap: the program sees a read-only view of
   only the Python installation and /usr, writes only a 64 MiB tmpfs that vanishes with it, has no
   network but its own `lo`, cannot see or signal any process outside its PID namespace, reads
   neither $HOME nor /etc nor the eval's environment, and the whole namespace is killed when it ends.
   A seccomp filter (seccomp.py) refuses new processes and the kernel's riskier interfaces. On macOS,
   `sandbox-exec` with a deny-default profile (untested). With neither, `run_program` raises
   `SandboxUnavailableError` unless the caller passes unsafe=True (`eval --unsafe-no-sandbox`).
2. Resource limits in the child (rlimits: CPU seconds, address space, file size, open files,
   processes, no core files) and a wall-clock timeout after which everything is killed.
3. A Python audit hook (child.py): a first line that turns the ordinary hostile calls (fork,
   sockets, ctypes, writes outside the folder, kill) into clear errors; not a boundary.

The verdict (child.py): the harness runs the program, then the tests, and calls `check` itself; a
pass is a per-run random token that it writes only after `check` returns. Exit status never decides,
so exit(0) and its cousins before the tests are failures ("exited before the tests finished").

Output is bounded (capture.py): the first and last 4 KiB of stdout and stderr, whatever the program
writes; `detail` (what eval.json keeps) is the last line of stderr, 200 characters at most, with the
values of secret-named environment variables blanked out.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import SandboxUnavailableError
from .boundary import INSTALL_HINT, WORKDIR, Isolation, base_interpreter, bwrap_command, find_bwrap, isolation
from .boundary import sandbox_exec_profile as _profile
from .capture import Bounded, detail_line, exchange, scrub, secret_values

__all__ = ["Outcome", "isolation", "network_isolated", "require_sandbox", "run_program", "sandbox_setting"]

TIMEOUT_S = 10.0  # wall clock per program (HumanEval's own harness uses 3 s; a slow CPU needs more)
MEMORY_BYTES = 2 << 30  # address space: numpy and the tests fit; a runaway allocation does not
CPU_S = 20
FILE_BYTES = 16 << 20
OPEN_FILES = 64
PROCESSES = 64  # per user: not enforced for root, which is why seccomp and the audit hook refuse fork
LAYERS = ("audit_hook", "seccomp")  # what tests may switch off to show the OS boundary holds alone
_CHILD = Path(__file__).with_name("child.py")
_BWRAP_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # bubblewrap's own: /proc/1/environ inside


@dataclass
class Outcome:
    passed: bool
    status: str  # "passed" | "failed" | "exited" | "timeout" | "error"
    detail: str  # why, in one line (the last line of the error, trimmed and scrubbed)
    stdout: str = field(default="", repr=False)  # first and last 4 KiB
    stderr: str = field(default="", repr=False)


def require_sandbox(unsafe: bool = False) -> Isolation | None:
    """The isolation programs will run under; None with unsafe=True (no OS sandbox, on purpose).
    SandboxUnavailableError when there is none and the caller did not opt out."""
    if unsafe:
        return None
    iso = isolation()
    if not iso.available:
        raise SandboxUnavailableError(
            f"no sandbox for model-written code on this machine ({iso.detail}); "
            f"{INSTALL_HINT if sys.platform.startswith('linux') else 'run in a Linux VM or container'}, "
            "or pass --unsafe-no-sandbox (unsafe=True) to run it with only rlimits and an audit hook"
        )
    return iso


def sandbox_setting(unsafe: bool = False) -> str:
    """What reports record: "bubblewrap", "sandbox-exec", or "off" (unsafe=True)."""
    return "off" if unsafe else isolation().kind


def network_isolated(unsafe: bool = False) -> bool:
    """Whether a program run the given way gets no network but its own loopback."""
    if not unsafe:
        return isolation().available  # bubblewrap: only lo; sandbox-exec: no network at all
    if not sys.platform.startswith("linux"):
        return False
    code = (
        "import ctypes, socket\nl = ctypes.CDLL(None)\n"
        "r = l.unshare(0x40000000) == 0 or l.unshare(0x50000000) == 0\nprint(r, len(socket.if_nameindex()))"
    )
    probe = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=30)
    return probe.returncode == 0 and probe.stdout.split() == ["True", "1"]  # only "lo" in a fresh one


def run_program(
    source: str,
    timeout: float = TIMEOUT_S,
    isolate_network: bool = True,
    *,
    tests: str | None = None,
    entry_point: str | None = None,
    unsafe: bool = False,
    layers_off: Collection[str] = (),
) -> Outcome:
    """Run `source` in the sandbox, then (if given) `tests` in the same namespace and
    `check(<entry_point>)`. passed = the harness saw the program, and `check`, return (without tests:
    the program ran to its end). unsafe=True runs without the OS sandbox; `layers_off` (a subset of
    LAYERS) is for tests that show the OS boundary holds on its own."""
    if unknown := set(layers_off) - set(LAYERS):
        raise ValueError(f"unknown sandbox layers {sorted(unknown)}; the layers are {LAYERS}")
    iso = require_sandbox(unsafe)
    token = secrets.token_hex(16)
    request = {"token": token, "program": source, "tests": tests, "entry_point": entry_point}
    netns = unsafe and isolate_network
    args = [CPU_S, MEMORY_BYTES, FILE_BYTES, OPEN_FILES, PROCESSES, 0, int(netns), int("audit_hook" not in layers_off)]
    with tempfile.TemporaryDirectory(prefix="edge-specens-sandbox-") as folder:
        return _run(iso, folder, args, request, timeout, isolate_network, set(layers_off))


def _command(iso, folder, child, isolate_network, layers_off) -> tuple[list[str], str, dict[str, str], list[int]]:
    """(argv, cwd, environment, descriptors to hand over) for the child, as this platform runs it."""
    if iso is not None and iso.kind == "bubblewrap":
        from .seccomp import compile_filter

        bpf = compile_filter() if "seccomp" not in layers_off else None
        fds = []
        if bpf is not None:
            bpf_r, bpf_w = os.pipe()  # bubblewrap reads the filter from here (it fits in a pipe)
            os.write(bpf_w, bpf)
            os.close(bpf_w)
            fds.append(bpf_r)
        env = {**_BWRAP_ENV, "HOME": WORKDIR, "TMPDIR": WORKDIR}
        cmd = bwrap_command(
            find_bwrap() or "bwrap",
            [base_interpreter(), "-I", "-S", "-c", *child],
            env,
            seccomp_fd=fds[0] if fds else None,
            share_net=not isolate_network,
        )
        return cmd, "/", dict(_BWRAP_ENV), fds  # bubblewrap itself gets a scrubbed environment too
    env = {**_BWRAP_ENV, "HOME": folder, "TMPDIR": folder}
    if iso is None:
        cmd = [sys.executable, "-I", "-S", "-c", *child]
    else:  # the profile lets exactly the base interpreter run
        cmd = ["/usr/bin/sandbox-exec", "-p", _profile(folder), base_interpreter(), "-I", "-S", "-c", *child]
    return cmd, folder, env, []


def _run(iso, folder, args, request, timeout, isolate_network, layers_off) -> Outcome:
    import json

    hidden = secret_values()
    verdict_r, verdict_w = os.pipe()
    args[5] = verdict_w
    fds: list[int] = []
    try:
        cmd, cwd, env, fds = _command(iso, folder, [_CHILD.read_text(), *map(str, args)], isolate_network, layers_off)
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            pass_fds=(verdict_w, *fds),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: killed whole at the end
        )
    except OSError as e:
        os.close(verdict_r)
        return Outcome(False, "error", f"could not start the sandbox: {e}")
    finally:
        for fd in (verdict_w, *fds):
            os.close(fd)
    out, err, verdict = Bounded(), Bounded(), Bounded(64, 256)
    assert proc.stdout is not None and proc.stderr is not None
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err, verdict_r: verdict}
    deadline = time.monotonic() + timeout
    try:
        in_time = exchange(proc, json.dumps(request).encode("utf-8", "surrogatepass"), streams, deadline)
        if in_time:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                in_time = False
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # bubblewrap (which takes its namespace along), or the child
        except OSError:
            pass
        proc.wait()
        os.close(verdict_r)
        proc.stdout.close()
        proc.stderr.close()
    texts = {"stdout": scrub(out.text(), hidden), "stderr": scrub(err.text(), hidden)}
    if not in_time:
        return Outcome(False, "timeout", f"no result within {timeout:g} s", **texts)
    said = bytes(verdict.head + verdict.tail).split()
    if said and said[-1] == request["token"].encode():
        return Outcome(True, "passed", "", **texts)
    if not said or said[0] != b"R":
        return Outcome(False, "error", f"the sandbox did not start: {detail_line(err, hidden)}", **texts)
    if said[-1] == b"E":
        return Outcome(False, "failed", detail_line(err, hidden), **texts)
    how = _how(proc.returncode, bubblewrap=iso is not None and iso.kind == "bubblewrap")
    return Outcome(False, "exited", f"exited before the tests finished ({how})", **texts)


def _how(returncode: int, bubblewrap: bool) -> str:
    if bubblewrap and returncode > 128:  # bubblewrap reports a child killed by signal N as 128 + N
        try:
            return f"exit status {returncode}: killed by {signal.Signals(returncode - 128).name}"
        except ValueError:
            pass
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"
