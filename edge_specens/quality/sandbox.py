"""Run model-written code and its tests without letting it hurt the machine or the eval.

Each program runs in a fresh child Python (`python -I`: no user site, no PYTHON* variables) with:

- a fresh temporary working directory, deleted afterwards, and a scrubbed environment (PATH, LANG and
  a HOME inside that directory only): relative paths and ~ land in the throwaway folder;
- resource limits (`resource` rlimits): CPU seconds, address space (a 50 GB allocation fails with
  MemoryError), file size, open files, processes, no core files;
- a wall-clock timeout, after which the child's whole process group is killed (it runs in a new
  session), so a program that loops forever or sleeps cannot hang the run;
- no network: a new network namespace where the OS allows it (Linux as root or with user namespaces),
  and in every case the audit hook below;
- a Python audit hook (PEP 578), installed before the program is compiled, that refuses: opening a file
  for writing outside the folder, deleting/renaming/creating anything outside it, any socket, starting
  processes (fork, exec, spawn, subprocess, os.system), signalling other processes (os.kill of the
  parent), loading native libraries (ctypes, which could undo all this) and changing limits.

What it does not stop: reading world-readable files by absolute path (the tests need the standard
library; secrets belong in files only you can read), code that finds a way around CPython's audit hooks
(they are a policy, not a security boundary: a determined attacker with native code could escape; the
rlimits, the timeout, the process group kill and, where available, the network namespace still hold).
Run untrusted benchmarks in a VM or container if that matters to you. Documented in docs/design.md §12.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

TIMEOUT_S = 10.0  # wall clock per program (HumanEval's own harness uses 3 s; a slow CPU needs more)
MEMORY_BYTES = 2 << 30  # address space: numpy and the tests fit; a runaway allocation does not
CPU_S = 20
FILE_BYTES = 16 << 20
OPEN_FILES = 64
PROCESSES = 64  # per user: not enforced for root, so the audit hook also refuses fork/exec/spawn

# The child runs this first: limits, the network namespace, then the audit hook (whose settings live in
# a closure, out of reach of the program, which runs with fresh globals), then the program from stdin.
GUARD = r"""
import os, sys, resource
def _limit(cpu, memory, fsize, nofile, nproc, netns):
    for what, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, fsize),
                        (resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_NPROC, nproc), (resource.RLIMIT_CORE, 0)):
        try:
            resource.setrlimit(what, (value, value))
        except (ValueError, OSError):
            pass
    if netns:
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).unshare(0x40000000)  # CLONE_NEWNET: no interface but lo
        except (OSError, AttributeError):
            pass
def _install():
    root = os.path.realpath(os.getcwd())
    deny = frozenset((
        "socket.socket", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
        "subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn",
        "os.kill", "os.killpg", "os.chroot", "os.setuid", "os.setgid", "ctypes.dlopen", "ctypes.dlsym",
        "ctypes.cdata", "resource.setrlimit", "resource.prlimit", "signal.pthread_kill", "sys.addaudithook",
        "pty.spawn", "webbrowser.open", "os.startfile",
    ))
    paths = (("os.remove", (0,)), ("os.rmdir", (0,)), ("os.rename", (0, 1)), ("os.mkdir", (0,)),
             ("os.chmod", (0,)), ("os.chown", (0,)), ("os.link", (0, 1)), ("os.symlink", (0, 1)),
             ("os.truncate", (0,)), ("os.utime", (0,)), ("shutil.rmtree", (0,)), ("os.chdir", (0,)))
    paths = dict(paths)
    write = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    def inside(p):
        if isinstance(p, int):
            return True
        try:
            real = os.path.realpath(os.fsdecode(p))
        except TypeError:
            return False
        return real == root or real.startswith(root + os.sep)
    def hook(event, args):
        if event in deny:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & write
            if writing and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the working folder is not allowed")
        elif event in paths:
            for i in paths[event]:
                if i < len(args) and args[i] is not None and not inside(args[i]):
                    raise PermissionError(f"sandbox: {event} outside the working folder is not allowed")
    sys.addaudithook(hook)
_limit(*map(int, sys.argv[1:7]))
_source = sys.stdin.read()
_install()
del _limit, _install
exec(compile(_source, "<program>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass
class Outcome:
    passed: bool
    status: str  # "passed" | "failed" | "timeout" | "error"
    detail: str  # the last line of the error, if any


def network_isolated() -> bool:
    """Whether the child can get a network namespace of its own here (Linux, root or user namespaces)."""
    if not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(
        [sys.executable, "-c", "import ctypes, socket; r = ctypes.CDLL(None).unshare(0x40000000); "
         "print(r, len(socket.if_nameindex()))"],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    return probe.returncode == 0 and probe.stdout.split() == ["0", "1"]  # only "lo" in a fresh namespace


def run_program(source: str, timeout: float = TIMEOUT_S, isolate_network: bool = True) -> Outcome:
    """Run `source` (the completion and its tests) in the sandbox; passed = it exited 0 in time."""
    with tempfile.TemporaryDirectory(prefix="edge-specens-sandbox-") as folder:
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": folder, "TMPDIR": folder}
        try:
            limits = (CPU_S, MEMORY_BYTES, FILE_BYTES, OPEN_FILES, PROCESSES, int(isolate_network))
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", GUARD, *map(str, limits)],
                cwd=folder,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group: killed whole at the end
            )
        except OSError as e:
            return Outcome(False, "error", f"could not start the sandbox: {e}")
        try:
            _, err = proc.communicate(source.encode("utf-8", "replace"), timeout=timeout)
            status = "passed" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            status, err = "timeout", b""
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever it started, too
            except OSError:
                pass
            proc.wait()
        lines = [ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
        detail = f"no result within {timeout:g} s" if status == "timeout" else (lines[-1][:300] if lines else "")
        return Outcome(status == "passed", status, detail)
