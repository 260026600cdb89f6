"""The harness inside the sandbox: limits, the audit hook, the program, then the tests, then the verdict.

It runs as `python -I -S -c <this file's text> CPU MEMORY FSIZE NOFILE NPROC VERDICT_FD NETNS AUDIT`
(standard library only: nothing of edge_specens is visible in the sandbox). The request comes on
stdin as JSON: the program, the tests (or none), the entry point and a per-run random token.

The verdict. Exit status is never the verdict. The harness, not the program, calls `check(candidate)`,
and only after it returns does it write the token to VERDICT_FD (a pipe whose other end the parent
reads); the parent counts a pass only when that token arrives. So every way of ending the run early
is a failure, named "exited before the tests finished": `exit(0)`, `sys.exit(0)` at the top or in an
`if __name__ == "__main__":` block, `os._exit(0)`, an atexit handler, `sys.excepthook`, a signal the
program sends itself, a crash. An exception from the program or the tests writes "E" (failed); a
program that prints whatever it likes, or writes garbage to every file descriptor, only fails.

What the token does not stop: a program written to cheat *this* harness on purpose. It runs in the
same interpreter, so it can reach the harness's frames (`sys._getframe`, which `typing` and
`collections.namedtuple` need and so stays allowed) and find the token, or make `check` pass by other
means (a result whose `__eq__` is always true, patched builtins). No in-process design can hide a
secret from code with the same memory; HumanEval measures models, not adversaries, and the OS sandbox
keeps such a program from hurting anything but its own score.

The audit hook (PEP 578) is the first line, not the boundary (that is the OS sandbox, boundary.py):
it turns ordinary hostile calls into clear errors ("sandbox: os.fork is not allowed"). Its settings
are constants and default arguments, it calls nothing the program can patch (no `os.path`, no
builtins looked up at call time), and the events that reach it (`gc.get_objects` and friends) are
denied. Paths are resolved with `dir_fd` taken into account, and opening a folder outside the working
folder is refused (a directory descriptor is what the `*at` calls need to reach outside).
"""

from __future__ import annotations

import os
import sys

DENIED_EVENTS = frozenset(
    {
        "socket.__new__", "socket.socket", "socket.connect", "socket.bind", "socket.getaddrinfo",
        "socket.gethostbyname", "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg",
        "subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn",
        "os.kill", "os.killpg", "os.chroot", "os.setuid", "os.setgid", "os.startfile", "pty.spawn",
        "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function", "ctypes.string_at",
        "ctypes.wstring_at", "ctypes.addressof", "ctypes.get_errno", "ctypes.set_errno",
        "resource.setrlimit", "resource.prlimit", "signal.pthread_kill", "sys.addaudithook",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "webbrowser.open",
    }
)  # fmt: skip
# event -> ((index of a path argument, index of its dir_fd argument or -1), ...)
PATH_EVENTS = {
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.rename": ((0, 2), (1, 3)), "os.mkdir": ((0, 2),),
    "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),),
    "os.truncate": ((0, -1),), "os.utime": ((0, 3),), "shutil.rmtree": ((0, 1),), "os.chdir": ((0, -1),),
    "os.setxattr": ((0, -1),), "os.removexattr": ((0, -1),), "os.chflags": ((0, -1),),
    "os.lchflags": ((0, -1),), "os.lchmod": ((0, -1),),
}  # fmt: skip
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def limit(cpu: int, memory: int, fsize: int, nofile: int, nproc: int) -> None:
    import resource

    for what, value in (
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_FSIZE, fsize),
        (resource.RLIMIT_NOFILE, nofile),
        (resource.RLIMIT_NPROC, nproc),
        (resource.RLIMIT_CORE, 0),
    ):
        try:
            resource.setrlimit(what, (value, value))
        except (ValueError, OSError):
            pass


def unshare_network() -> None:
    """Without the OS sandbox (unsafe=True): a network namespace if Linux allows it (root, or a
    user namespace for everyone else)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
            libc.unshare(0x40000000 | 0x10000000)  # | CLONE_NEWUSER
    except (OSError, AttributeError):
        pass


def install_hook(root: str) -> None:
    import stat

    def real(
        path,
        dir_fd=-1,
        _type=type,
        _int=int,
        _bytes=bytes,
        _str=str,
        _lstat=os.lstat,
        _readlink=os.readlink,
        _getcwd=os.getcwd,
        _fspath=os.fspath,
        _islnk=stat.S_ISLNK,
    ):
        """The absolute, symlink-free path `path` names (relative to dir_fd if given); None if unknown."""
        t = _type(path)
        if t is _int:
            path = _readlink(f"/proc/self/fd/{path}")  # what an open descriptor points at
        elif t is not _str:
            path = _fspath(path)  # a path object: asked once (one that changes its answer gets past)
            if _type(path) is _bytes:
                path = path.decode("utf-8", "surrogateescape")
        if not path.startswith("/"):
            base = _getcwd() if dir_fd is None or dir_fd < 0 else _readlink(f"/proc/self/fd/{dir_fd}")
            path = base + "/" + path
        parts = [p for p in path.split("/") if p and p != "."]
        done: list = []
        hops = 0
        while parts:
            name = parts.pop(0)
            if name == "..":
                if done:
                    done.pop()
                continue
            here = "/" + "/".join([*done, name])
            try:
                st = _lstat(here)
            except OSError:
                done.append(name)
                continue
            if _islnk(st.st_mode):
                hops += 1
                if hops > 40:
                    return None
                target = _readlink(here)
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p and p != "."] + parts
            else:
                done.append(name)
        return "/" + "/".join(done)

    inner = root.rstrip("/")

    def hook(
        event,
        args,
        _deny=DENIED_EVENTS,
        _paths=PATH_EVENTS,
        _write=WRITE_FLAGS,
        _root=inner,
        _real=real,
        _type=type,
        _int=int,
        _len=len,
        _stat=os.stat,
        _isdir=stat.S_ISDIR,
    ):
        def inside(p, dir_fd=-1):
            try:
                r = _real(p, dir_fd)
            except (OSError, TypeError, ValueError, UnicodeError):
                return False
            return r is not None and (r == _root or r.startswith(_root + "/"))

        if event in _deny:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            if path is None or _type(path) is _int:  # open(fd) wraps a descriptor the program holds
                return
            writing = bool((flags or 0) & _write)
            if mode is not None:
                for c in "wax+":
                    if c in mode:
                        writing = True
            if inside(path):
                return
            if writing:
                raise PermissionError(f"sandbox: writing {path!r} outside the working folder is not allowed")
            try:
                is_dir = _isdir(_stat(path).st_mode)
            except (OSError, TypeError, ValueError):
                is_dir = False
            if is_dir:  # a descriptor of an outside folder is what os.open(..., dir_fd=) needs to write there
                raise PermissionError(f"sandbox: opening the folder {path!r} outside the working folder is not allowed")
        elif event in _paths:
            for i, at in _paths[event]:
                if i < _len(args) and args[i] is not None:
                    dir_fd = args[at] if 0 <= at < _len(args) and args[at] is not None else -1
                    if not inside(args[i], dir_fd):
                        raise PermissionError(f"sandbox: {event} outside the working folder is not allowed")

    sys.addaudithook(hook)


def run(request: dict, verdict_fd: int) -> None:
    """Run the program, then the tests; write the verdict; never return."""
    import builtins
    import traceback

    write, end = os.write, os._exit  # the program may patch the os module; these stay the harness's

    def name(e, _type=type):
        return _type(e).__name__

    def text(e, _str=str):
        try:
            return _str(e)
        except BaseException:
            return "?"

    token = request["token"].encode()
    scope = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(request["program"], "<program>", "exec"), scope)
        if request.get("tests") is not None:
            exec(compile(request["tests"], "<tests>", "exec"), scope)
            entry = request.get("entry_point") or ""
            if entry not in scope:
                raise NameError(f"the program does not define {entry!r}")
            check = scope["check"]
            check(scope[entry])  # type: ignore[operator]
    except SystemExit:
        raise  # an exit before the tests finished: no verdict; the parent names it
    except BaseException as e:
        write(verdict_fd, b"\nE\n")
        try:
            traceback.print_exception(e)
            sys.stderr.flush()
        except BaseException:  # the program broke what printing needs (builtins, sys.stderr): say it plainly
            write(2, f"\n{name(e)}: {text(e)}\n".encode("utf-8", "replace"))
        finally:
            end(1)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # a broken stream the program left cannot take the verdict away
        pass
    write(verdict_fd, b"\n" + token + b"\n")
    end(0)


def main(argv: list[str]) -> None:
    cpu, memory, fsize, nofile, nproc, verdict_fd, netns, audit = (int(a) for a in argv[1:9])
    limit(cpu, memory, fsize, nofile, nproc)
    os.write(verdict_fd, b"R\n")  # the sandbox started: what fails after this is the program's
    raw = sys.stdin.buffer.read()
    null = os.open(os.devnull, os.O_RDONLY)  # input() in the program gets EOF, not the request
    os.dup2(null, 0)
    os.close(null)
    import json

    request = json.loads(raw)
    del raw
    if netns:
        unshare_network()
    if audit:
        install_hook(os.getcwd())
    run(request, verdict_fd)


if __name__ == "__main__":
    main(sys.argv)
