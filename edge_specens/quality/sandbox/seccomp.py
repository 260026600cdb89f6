"""A seccomp filter for the sandboxed program, compiled to classic BPF with the standard library.

bubblewrap loads it (`--seccomp FD`) just before it executes the program, so it binds the program and
everything it could start, and nothing of bubblewrap's own setup. It closes what the namespaces leave
open to code that gets past the audit hook:

- process creation: `fork`, `vfork`, and `clone` without CLONE_THREAD fail (threads still work), so
  `_posixsubprocess`, `os.system` and fork bombs fail at the kernel; `clone3` answers ENOSYS, which
  makes the C library fall back to `clone` for threads (what Flatpak and Docker do);
- the kernel interfaces a test never needs and escapes like: ptrace and reading other processes'
  memory, mounts and new namespaces, module and kexec loading, bpf, perf, userfaultfd, io_uring,
  keyrings, file handles (`open_by_handle_at`), and the like (errno EPERM);
- syscalls of another ABI (i386 on x86_64, x32): the process is killed, since their numbers differ.

Only x86_64 and aarch64 have tables here; elsewhere `compile_filter` returns None and the sandbox
runs without a filter (the namespaces still hold), which `isolation()` reports.
"""

from __future__ import annotations

import platform
import struct

# BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h)
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000
_KILL_PROCESS = 0x80000000
_ERRNO = 0x00050000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD = 0x00010000
_X32_BIT = 0x40000000

# offsets in struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
_NR, _ARCH, _ARG0_LOW = 0, 4, 16  # the low half of args[0] on a little-endian machine

DENIED = (
    "ptrace process_vm_readv process_vm_writev kcmp pidfd_getfd "
    "mount umount2 pivot_root chroot mount_setattr move_mount open_tree fsopen fsconfig fsmount fspick "
    "unshare setns swapon swapoff reboot kexec_load kexec_file_load init_module finit_module delete_module "
    "bpf perf_event_open userfaultfd io_uring_setup io_uring_enter io_uring_register "
    "keyctl add_key request_key open_by_handle_at name_to_handle_at acct quotactl syslog vhangup "
    "personality fanotify_init lookup_dcookie memfd_secret uselib ioperm iopl fork vfork"
).split()

# syscall numbers (asm/unistd_64.h; asm-generic/unistd.h for aarch64)
_X86_64 = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "pidfd_getfd": 438,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "mount_setattr": 442, "move_mount": 429,
    "open_tree": 428, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "unshare": 272,
    "setns": 308, "swapon": 167, "swapoff": 168, "reboot": 169, "kexec_load": 246, "kexec_file_load": 320,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "bpf": 321, "perf_event_open": 298,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "keyctl": 250, "add_key": 248, "request_key": 249, "open_by_handle_at": 304, "name_to_handle_at": 303,
    "acct": 163, "quotactl": 179, "syslog": 103, "vhangup": 153, "personality": 135, "fanotify_init": 300,
    "lookup_dcookie": 212, "memfd_secret": 447, "uselib": 134, "ioperm": 173, "iopl": 172, "fork": 57,
    "vfork": 58, "clone": 56, "clone3": 435,
}  # fmt: skip
_AARCH64 = {
    "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272, "pidfd_getfd": 438,
    "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "mount_setattr": 442, "move_mount": 429,
    "open_tree": 428, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "unshare": 97,
    "setns": 268, "swapon": 224, "swapoff": 225, "reboot": 142, "kexec_load": 104, "kexec_file_load": 294,
    "init_module": 105, "finit_module": 273, "delete_module": 106, "bpf": 280, "perf_event_open": 241,
    "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "keyctl": 219, "add_key": 217, "request_key": 218, "open_by_handle_at": 265, "name_to_handle_at": 264,
    "acct": 89, "quotactl": 60, "syslog": 116, "vhangup": 58, "personality": 92, "fanotify_init": 262,
    "lookup_dcookie": 18, "memfd_secret": 447, "clone": 220, "clone3": 435,
}  # fmt: skip
# machine -> (AUDIT_ARCH_*, table, whether the x32 ABI shares the architecture value)
_ARCHES = {"x86_64": (0xC000003E, _X86_64, True), "aarch64": (0xC00000B7, _AARCH64, False)}
_ARCHES["amd64"] = _ARCHES["x86_64"]
_ARCHES["arm64"] = _ARCHES["aarch64"]


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def compile_filter(machine: str | None = None) -> bytes | None:
    """The filter as `struct sock_filter[]` bytes for this machine's architecture, or None."""
    arch = _ARCHES.get((machine or platform.machine()).lower())
    if arch is None:
        return None
    audit_arch, table, has_x32 = arch
    denied = [table[name] for name in DENIED if name in table]
    # layout: checks, then the shared verdicts at the end (jump offsets count instructions skipped)
    body: list[tuple[int, int, str]] = []  # (opcode, k, where a match jumps)
    body.append((_LD_W_ABS, _ARCH, ""))
    body.append((_JEQ_K, audit_arch, "next|kill"))
    body.append((_LD_W_ABS, _NR, ""))
    if has_x32:
        body.append((_JGE_K, _X32_BIT, "kill"))
    body += [(_JEQ_K, nr, "eperm") for nr in denied]
    body.append((_JEQ_K, table["clone3"], "enosys"))
    body.append((_JEQ_K, table["clone"], "next|allow"))  # not clone: allowed; clone: look at its flags
    body.append((_LD_W_ABS, _ARG0_LOW, ""))
    body.append((_JSET_K, _CLONE_THREAD, "allow"))
    body.append((_RET_K, _ERRNO | _EPERM, ""))  # clone of a process
    ends = ["allow", "eperm", "enosys", "kill"]
    verdicts = {"allow": _ALLOW, "eperm": _ERRNO | _EPERM, "enosys": _ERRNO | _ENOSYS, "kill": _KILL_PROCESS}
    n = len(body)
    out = []
    for i, (code, k, target) in enumerate(body):
        if code == _LD_W_ABS or code == _RET_K:
            out.append(_op(code, k))
            continue
        to = target.split("|")
        if to[0] == "next":  # match: fall through; no match: jump to the verdict
            out.append(_op(code, k, 0, n - i - 1 + ends.index(to[1])))
        else:  # match: jump to the verdict; no match: fall through
            out.append(_op(code, k, n - i - 1 + ends.index(to[0]), 0))
    out += [_op(_RET_K, verdicts[e]) for e in ends]
    if len(out) > 255:  # jt/jf are one byte
        raise AssertionError("seccomp filter too long for one-byte jumps")
    return b"".join(out)
