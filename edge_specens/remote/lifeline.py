"""Child processes that die with their parent: `rpc-server`'s server child and each remote member's
helper. An orphaned server keeps serving its port to anyone, unsupervised, and blocks a restart; an
orphaned helper keeps its RPC server busy (llama.cpp's server serves one client at a time). A
parent killed with `kill -9` runs no cleanup, so the child has to notice by itself, two ways:

- **PR_SET_PDEATHSIG(SIGKILL)** (Linux): the kernel kills the child when the thread that started it
  ends. It is set at the child's start, so `getppid()` is checked right after to close the race with
  a parent that died before it. Because it follows a *thread*, children are always started from a
  thread that lives as long as the process (the main thread, or the spawner thread here).
- **A lifeline pipe** (every POSIX system, macOS included): the parent keeps the only write end; a
  thread in the child blocks reading the other end, which reads end-of-file once the parent is gone
  (the kernel closes its descriptors however it died), and then ends the child at once.
"""

from __future__ import annotations

import ctypes
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ORPHAN_EXIT = 1  # the status of a child that ended because its parent had gone


class Lifeline:
    """The parent's side: a pipe whose write end only this process holds (os.pipe's descriptors are
    not inherited; `spawn` passes the read end to the one child that needs it)."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()

    def argv(self) -> list[str]:
        """What the child passes to die_with_parent: the read end and this process's id."""
        return [str(self._read), str(os.getpid())]

    def _handed_over(self) -> None:
        if self._read >= 0:
            os.close(self._read)
            self._read = -1

    def close(self) -> None:
        """Cut the line: the child ends (if it still runs)."""
        self._handed_over()
        if self._write >= 0:
            os.close(self._write)
            self._write = -1


def spawn(args: Sequence[str], lifeline: Lifeline, pass_fds: Sequence[int] = (), **popen: Any) -> subprocess.Popen:
    """subprocess.Popen(args, ...) with the lifeline's read end passed down, started from a thread
    that outlives it (PR_SET_PDEATHSIG follows the starting thread: a worker thread that ends would
    take the child with it)."""
    fds = (*pass_fds, lifeline._read)
    try:
        return _on_long_lived_thread(lambda: subprocess.Popen(list(args), pass_fds=fds, **popen))
    finally:
        lifeline._handed_over()  # the child has its copy; ours would keep the pipe open for nothing


def die_with_parent(read_fd: int, parent_pid: int) -> None:
    """The child's side, first thing at its start: end this process when the parent is gone."""
    _set_pdeathsig()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(ORPHAN_EXIT)
    threading.Thread(target=_watch, args=(read_fd,), name="edge-specens-lifeline", daemon=True).start()


def _watch(read_fd: int) -> None:
    while True:
        try:
            if not os.read(read_fd, 1):
                break  # end of file: every write end is closed, the parent is gone
        except OSError:
            break
    os._exit(ORPHAN_EXIT)  # no cleanup: the main thread may be blocked in llama.cpp for good


def _set_pdeathsig() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)  # SIGKILL
    except (OSError, AttributeError):
        pass  # the lifeline still works


# ---------------------------------------------------------------------------- the spawner thread

_jobs: queue.SimpleQueue = queue.SimpleQueue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _on_long_lived_thread(fn: Callable[[], subprocess.Popen]) -> subprocess.Popen:
    """fn() on the main thread (it lives as long as the process) or else on one daemon thread that
    does nothing but start children, for the life of the process."""
    global _spawner
    if threading.current_thread() is threading.main_thread():
        return fn()
    with _spawner_lock:
        if _spawner is None:
            _spawner = threading.Thread(target=_serve_jobs, name="edge-specens-spawner", daemon=True)
            _spawner.start()
    done = threading.Event()
    out: list[Any] = []
    _jobs.put((fn, out, done))
    done.wait()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def _serve_jobs() -> None:
    while True:
        fn, out, done = _jobs.get()
        try:
            out.append(fn())
        except BaseException as e:  # handed to the caller's thread
            out.append(e)
        done.set()
