"""Which isolation layers this machine allows, probed once per grading process.

    iso = isolation("auto")        # or "strict": an IsolationError unless uid + namespaces + seccomp
    print(iso.level, iso.report())

The layers, strongest first (each is a module of grader/worker/):

| layer       | module          | needs                                   | holds against |
|-------------|-----------------|-----------------------------------------|---------------|
| uid         | identity.py     | the grader runs as root (CAP_SETUID)    | signals, ptrace, /proc/<pid>/mem, writing the runtime, reading protected folders |
| namespaces  | namespaces.py   | root with CAP_SYS_ADMIN (not in Docker) | every file but the allow-list, every process, the network |
| seccomp     | syscalls.py     | libseccomp (any user)                   | programs (execve), ptrace, mount/unshare, io_uring, non-AF_UNIX sockets |
| cgroups     | cgroups.py      | root, writable memory and pids cgroups  | memory hidden in tmpfs, process floods |
| rlimits     | sandbox.py      | nothing                                 | address space, file size, processes, open files, CPU |
| audit hook  | sandbox.py      | nothing                                 | Python-level file, socket and signal calls (a second layer) |

The grading process also marks itself non-dumpable (no ptrace, no /proc/<pid>/mem) at every level.
`LLMGRADE_ISOLATION_OFF=namespaces,cgroups` switches layers off, to reproduce a weaker
level (the tests use it for the Docker-like level).
"""

from __future__ import annotations

import os
import sysconfig
from dataclasses import dataclass, field

from grader.worker import cgroups, identity, libc, namespaces, syscalls

LAYERS = ("uid", "namespaces", "seccomp", "cgroups", "rlimits", "audit hook")
STRICT = ("uid", "namespaces", "seccomp")
OFF_VARIABLE = "LLMGRADE_ISOLATION_OFF"
PROBE_UID = identity.FIRST_UID - 1   # never runs submission code, never in the pool


class IsolationError(Exception):
    """The isolation asked for is not available here (one line for the instructor)."""


@dataclass
class Isolation:
    active: dict[str, bool] = field(default_factory=dict)
    detail: dict[str, str] = field(default_factory=dict)   # what it does, or why it is off

    @property
    def uid(self) -> bool:
        return self.active.get("uid", False)

    @property
    def namespaces(self) -> bool:
        return self.active.get("namespaces", False)

    @property
    def seccomp(self) -> bool:
        return self.active.get("seccomp", False)

    @property
    def cgroups(self) -> bool:
        return self.active.get("cgroups", False)

    @property
    def level(self) -> str:
        """full (uid + namespaces + seccomp), container (uid + seccomp: Docker), minimal (no uid of its own)."""
        if all(self.active.get(name) for name in STRICT):
            return "full"
        if self.uid and self.seccomp:
            return "container"
        return "minimal"

    def summary(self) -> str:
        on = [name for name in LAYERS if self.active.get(name)]
        return f"isolation: {self.level} ({', '.join(on)})"

    def report(self) -> list[tuple[str, bool, str]]:
        return [(name, self.active.get(name, False), self.detail.get(name, "")) for name in LAYERS]


_cache: dict[tuple[bool, frozenset], Isolation] = {}


def switched_off() -> frozenset[str]:
    return frozenset(p.strip() for p in os.environ.get(OFF_VARIABLE, "").split(",") if p.strip())


def isolation(policy: str = "auto") -> Isolation:
    """The layers this process's workers get; `policy` "strict" refuses anything below full."""
    if policy not in ("auto", "strict"):
        raise IsolationError(f"unknown isolation policy {policy!r} (auto or strict)")
    key = (os.geteuid() == 0, switched_off())
    if key not in _cache:
        _cache[key] = probe(key[1])
    iso = _cache[key]
    if policy == "strict":
        missing = [name for name in STRICT if not iso.active.get(name)]
        if missing:
            raise IsolationError("--isolation strict: " + "; ".join(
                f"{name} is off ({iso.detail.get(name, '')})" for name in missing))
    return iso


def probe(off: frozenset[str] = frozenset()) -> Isolation:
    iso = Isolation()

    def decide(name: str, why_not: str, what: str) -> None:
        if name in off:
            why_not = f"switched off by {OFF_VARIABLE}"
        iso.active[name] = not why_not
        iso.detail[name] = what if not why_not else why_not

    root = os.geteuid() == 0
    not_root = "the grader is not running as root: a student's code needs no protection from the student"
    # Namespaces first: inside them the runtime is bound where any uid can read it, so only
    # without them must another uid be able to read it where it lies (Python under /root is not).
    ns_why = not_root if not root else _in_child(_try_namespaces)
    if "namespaces" in off:
        ns_why = "off"
    uid_why = not_root if not root else _in_child(lambda: _try_uid(check_paths=bool(ns_why)))
    decide("uid", uid_why,
           f"each worker runs as its own uid from {identity.FIRST_UID} "
           f"(pool of {identity.POOL_SIZE}), no groups, no capabilities, no new privileges")
    decide("namespaces", ns_why if iso.uid else ns_why or "they need the uid layer (a worker that stays "
           "root could undo them)",
           "mount (an allow-list: runtime read-only, own folder, private /tmp and /dev/shm, own /proc), "
           "pid, network (loopback only), ipc, uts")
    decide("seccomp", syscalls.available() or _in_child(_try_seccomp),
           "refuses programs (execve), ptrace, process_vm_*, mount, unshare, setns, bpf, io_uring, "
           "perf_event_open, keyctl, SysV IPC, and sockets other than AF_UNIX outside a network namespace")
    decide("cgroups", not_root if not root else cgroups.usable(),
           f"cgroup v{cgroups.version()} per worker: memory (tmpfs and shm counted) and process limits")
    decide("rlimits", "", "address space, file size, processes, open files, CPU time, no core dumps")
    decide("audit hook", "", "Python-level file, socket and signal checks (a second layer)")
    return iso


def _in_child(attempt) -> str:
    """Run `attempt()` in a forked child (it may change the child's identity for good); '' on success."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            attempt()
            message = b""
        except BaseException as exc:  # noqa: BLE001 -- the reason is the result
            message = f"{exc}".encode()[:500] or type(exc).__name__.encode()
        os.write(write, message)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    os.waitpid(pid, 0)
    return message


def _try_uid(check_paths: bool) -> None:
    import grader

    paths = [*_python_paths(), os.path.dirname(grader.__file__)]
    identity.drop_to(PROBE_UID)
    for path in paths if check_paths else ():
        if not os.access(path, os.R_OK | os.X_OK):
            raise OSError(f"another uid cannot read {path}: install Python and the grader where "
                          f"other users can read them (their folders need o+rx)")


def _python_paths() -> list[str]:
    return [p for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
                        os.path.dirname(os.__file__)} if os.path.exists(p)]


def _try_namespaces() -> None:
    libc.unshare(namespaces.FLAGS)
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    libc.mount("tmpfs", "/mnt" if os.path.isdir("/mnt") else "/tmp", "tmpfs", 0, "size=4k")


def _try_seccomp() -> None:
    import errno
    import socket

    syscalls.load(allow_inet=False)
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    except PermissionError:
        return
    raise OSError(errno.EPERM, "the filter loaded but did not refuse an internet socket")


def protect_grading_process() -> None:
    """No process may ptrace this one or read its memory through /proc (any uid, same uid included)."""
    try:
        libc.prctl(libc.PR_SET_DUMPABLE, 0)
    except OSError:
        pass

