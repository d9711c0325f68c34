"""The seccomp layer: system calls a worker may not make, refused by the kernel with EPERM.

A refused call is an ordinary error in the student's code (`PermissionError: [Errno 1]`),
never a crash of the worker or the grader. The filter is loaded last in the worker's
start-up (after its own mounts and the change of uid) and holds for every thread and
child it makes; `PR_SET_NO_NEW_PRIVS` lets an unprivileged process load it.

Binding: `pyseccomp` (ctypes over the system's libseccomp, the library Docker and
systemd build their filters with; the same API as libseccomp's own Python binding).
Compared with `seccompy` (pure-Python BPF, young) and `mephi42-seccomp` (a compiled
fork): libseccomp keeps the syscall tables and architecture checks, pyseccomp only
passes our rules through, and it installs on any Python >= 3.6 without a compiler.
It is imported in the template process, before any worker forks, because loading
libseccomp runs `ldconfig` (a program) and programs are what the filter forbids.
"""

from __future__ import annotations

import errno
import socket

try:
    import pyseccomp as seccomp
except (ImportError, OSError, RuntimeError) as exc:   # no libseccomp on this machine
    seccomp = None
    UNAVAILABLE = f"{type(exc).__name__}: {exc}"
else:
    UNAVAILABLE = ""

# Student code has no business with any of these; each is refused outright.
DENIED = (
    # reading or steering another process: the grader, another worker
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # starting programs: a child interpreter or /bin/cat has none of our Python-level checks
    # (torch.compile starts a compiler, so the training stage is graded with compile=False)
    "execve", "execveat",
    # leaving or rebuilding the sandbox
    "mount", "umount2", "unshare", "setns", "pivot_root", "chroot", "clone3",  # clone3: see below
    "open_tree", "move_mount", "fsopen", "fsmount", "fsconfig", "fspick", "mount_setattr",
    # kernel attack surface no tensor code needs
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load",
    "reboot", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "init_module", "finit_module", "delete_module", "swapon", "swapoff", "acct", "quotactl",
    # System V IPC outlives the process (torch and Python use POSIX shared memory instead)
    "shmget", "semget", "msgget",
)

# clone3 passes its flags in memory a filter cannot read: refused, so libc falls back to clone,
# whose namespace flags are checked here one by one.
_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
_PERSONALITY_QUERY = 0xFFFFFFFF


def available() -> str:
    """'' when a filter can be built here, else why not."""
    return UNAVAILABLE


def load(allow_inet: bool) -> None:
    """Install the filter in this process. `allow_inet`: the worker has its own empty network
    namespace, so internet sockets may be created (a connection fails the ordinary way);
    without one, only AF_UNIX sockets are allowed."""
    if seccomp is None:
        raise OSError(errno.ENOSYS, f"seccomp is not available: {UNAVAILABLE}")
    deny = seccomp.ERRNO(errno.EPERM)
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED:
        try:
            flt.add_rule(deny if name != "clone3" else seccomp.ERRNO(errno.ENOSYS), name)
        except (OSError, ValueError, RuntimeError):   # a call this kernel or libseccomp does not know
            pass
    for flag in _NAMESPACE_FLAGS:
        flt.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    flt.add_rule(deny, "personality", seccomp.Arg(0, seccomp.NE, _PERSONALITY_QUERY))
    if not allow_inet:
        for call in ("socket", "socketpair"):
            flt.add_rule(deny, call, seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
    flt.load()
