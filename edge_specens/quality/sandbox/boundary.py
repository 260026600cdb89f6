"""What the operating system isolates the program with, on this machine, and the command that does it.

- Linux with bubblewrap (`bwrap` 0.8 or later): new user, mount, PID, IPC, UTS, cgroup and network
  namespaces; a read-only view of only what `python -I -S` needs (the interpreter, its standard
  library and shared library, /usr); a size-capped tmpfs as the working folder (/tmp, the only
  writable place); a fresh /proc of the new PID namespace; a minimal /dev; no capabilities, no new
  privileges, no nested user namespaces; a seccomp filter (seccomp.py); and the whole PID namespace
  killed when the program ends or bubblewrap dies.
- macOS with `sandbox-exec`: a deny-default profile that allows reading the interpreter and system
  libraries, writing the working folder only, and nothing else (no network, no new processes, no
  signals to others). Written from Apple's profile language, never run here: untested.
- Anywhere else (Linux without a working bubblewrap, Windows): nothing; `run_program` refuses to run
  unless the caller passes unsafe=True.

`isolation()` probes once per process (bubblewrap may be installed but unable to create namespaces,
e.g. in a container without user namespaces: then it reports why and counts as unavailable).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass

DISK_BYTES = 64 << 20  # the working folder's tmpfs: all the files a program writes, together
WORKDIR = "/sandbox"  # inside bubblewrap: HOME, TMPDIR and the working directory (a name no host path has)
SANDBOX_UID = 65534  # "nobody" inside the user namespace
MIN_BWRAP = (0, 8, 0)  # --size (a tmpfs with a cap) and --disable-userns
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"


@dataclass(frozen=True)
class Isolation:
    """What this platform's sandbox is. kind: "bubblewrap" | "sandbox-exec" | "none"."""

    kind: str
    available: bool
    detail: str  # a line for reports: the tool and version, or why there is none
    seccomp: bool = False

    def describe(self) -> str:
        return f"{self.kind}: {self.detail}"


def base_interpreter() -> str:
    """The real interpreter behind this (possibly virtual-environment) Python."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def python_paths() -> list[str]:
    """What `python -I -S` needs to start and import the standard library: the interpreter, the
    standard library folder (with lib-dynload), and libpython when the build is shared."""
    paths = [base_interpreter(), os.path.dirname(os.path.realpath(os.__file__))]
    dynload = sysconfig.get_config_var("DESTSHARED")
    if dynload and os.path.isdir(dynload):
        paths.append(os.path.realpath(dynload))
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname:
        lib = os.path.join(libdir, soname)
        if os.path.exists(lib):
            paths.append(os.path.realpath(lib))
    return paths


def _read_only_view() -> tuple[list[str], list[tuple[str, str]]]:
    """(paths bound read-only at their own place, (link, target) symlinks at the top of the tree)."""
    binds = ["/usr"]
    links = []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            links.append((top, os.readlink(top)))
        elif os.path.isdir(top):
            binds.append(top)
    if os.path.exists("/etc/ld.so.cache"):
        binds.append("/etc/ld.so.cache")  # where the dynamic loader finds shared libraries
    binds += python_paths()
    kept: list[str] = []
    for p in sorted(set(binds), key=len):  # drop what an earlier (shorter) bind already shows
        if not any(p == k or p.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(p)
    return kept, links


def bwrap_command(
    bwrap: str, argv: list[str], env: dict[str, str], *, seccomp_fd: int | None, share_net: bool = False
) -> list[str]:
    """The bubblewrap command line that runs argv (a python inside) in the sandbox."""
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns"]
    if share_net:
        cmd.append("--share-net")
    cmd += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox"]
    cmd += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    binds, links = _read_only_view()
    for p in binds:
        cmd += ["--ro-bind", p, p]
    for link, target in links:
        cmd += ["--symlink", target, link]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(DISK_BYTES), "--tmpfs", WORKDIR]
    cmd += ["--remount-ro", "/dev", "--remount-ro", "/"]  # bubblewrap's own root and /dev are tmpfs
    cmd += ["--chdir", WORKDIR, "--clearenv"]
    for k, v in env.items():
        cmd += ["--setenv", k, v]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    return [*cmd, "--", *argv]


def _sb_quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sandbox_exec_profile(folder: str) -> str:
    """A deny-default Seatbelt profile (macOS `sandbox-exec -p`): read the interpreter and the system,
    write the working folder, nothing else. UNTESTED: written from the profile language, no Mac here."""
    reads = sorted({os.path.realpath(p) for p in python_paths()} | {sys.base_prefix, sys.base_exec_prefix})
    reads = [os.path.realpath(p) for p in reads]
    folder = os.path.realpath(folder)
    read_rules = " ".join(f"(subpath {_sb_quote(p)})" for p in reads)
    return "\n".join(
        [
            "(version 1)",
            "(deny default)",
            f"(allow process-exec (literal {_sb_quote(base_interpreter())}))",
            "(allow file-read-metadata)",
            '(allow file-read* (literal "/") (subpath "/usr/lib") (subpath "/usr/share") (subpath "/System")'
            f' (subpath "/private/var/db/dyld") (subpath "/Library/Apple") {read_rules} (subpath {_sb_quote(folder)})'
            ' (literal "/dev/null") (literal "/dev/urandom") (literal "/dev/random"))',
            f'(allow file-write* (subpath {_sb_quote(folder)}) (literal "/dev/null"))',
            # what the interpreter asks at start; not kern.procargs2, which shows other processes' environment
            '(allow sysctl-read (sysctl-name-prefix "hw.") (sysctl-name-prefix "kern.os")'
            ' (sysctl-name "kern.version") (sysctl-name "kern.hostname") (sysctl-name "kern.argmax")'
            ' (sysctl-name "sysctl.proc_cputype") (sysctl-name "sysctl.proc_translated"))',
            "(allow signal (target self))",
        ]
    )


def _bwrap_version(bwrap: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10, env={}).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(x or 0) for x in m.groups()) if m else None


def find_bwrap() -> str | None:
    return shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.access(p, os.X_OK)), None)


def _probe_bwrap(bwrap: str) -> Isolation:
    from .seccomp import compile_filter

    version = _bwrap_version(bwrap)
    if version is None:
        return Isolation("none", False, f"{bwrap} does not run")
    shown = ".".join(map(str, version))
    if version < MIN_BWRAP:
        return Isolation("none", False, f"bubblewrap {shown} is older than 0.8 (needed for a size-capped tmpfs)")
    bpf = compile_filter()
    r, w = os.pipe()
    try:
        if bpf is not None:
            os.write(w, bpf)
        os.close(w)
        w = -1
        cmd = bwrap_command(
            bwrap,
            [base_interpreter(), "-I", "-S", "-c", "import socket; print(len(socket.if_nameindex()))"],
            {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            seccomp_fd=r if bpf is not None else None,
        )
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env={}, pass_fds=(r,))
    except (OSError, subprocess.SubprocessError) as e:
        return Isolation("none", False, f"bubblewrap {shown} could not start: {e}")
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    if p.returncode != 0 or p.stdout.strip() != "1":
        why = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1][:200]
        return Isolation("none", False, f"bubblewrap {shown} cannot create the sandbox here: {why}")
    filt = "with a seccomp filter" if bpf is not None else "without seccomp (no filter for this CPU)"
    return Isolation("bubblewrap", True, f"bubblewrap {shown} ({bwrap}), namespaces, {filt}", bpf is not None)


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """What isolates a sandboxed program on this machine (probed once per process)."""
    if sys.platform.startswith("linux"):
        bwrap = find_bwrap()
        if bwrap is None:
            return Isolation("none", False, "bubblewrap (bwrap) is not installed")
        return _probe_bwrap(bwrap)
    if sys.platform == "darwin":
        if os.access("/usr/bin/sandbox-exec", os.X_OK):
            return Isolation("sandbox-exec", True, "macOS sandbox-exec, deny-default profile (untested)")
        return Isolation("none", False, "/usr/bin/sandbox-exec is missing")
    return Isolation("none", False, f"no OS sandbox for {sys.platform}")
