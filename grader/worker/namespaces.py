"""The namespace layer: a worker sees only what it needs, and none of the machine's processes.

    worker = enter(plan)   # in the forked worker, as root; returns in the new namespaces

Mount: a fresh tmpfs becomes `/`, holding read-only binds of the Python runtime,
the system libraries and the grader package, the worker's own folder (read-write),
a size-capped private tmpfs at `/tmp` and `/dev/shm`, a minimal `/dev` and its own
`/proc`. An allow-list: the course tree, the results and every other worker's
folder are simply not there, nor any other copy of the course on the machine.
PID: the worker is process 1 of its own PID namespace; when it dies the kernel kills
every process it started (daemons included), and it sees no other process.
Network: loopback only (a connection elsewhere fails the ordinary way). IPC, UTS: its own.

unshare(CLONE_NEWPID) moves the caller's future children, not the caller, so the
process that unshares stays outside as a small supervisor: it waits for the worker,
exits the way the worker did, and takes it down (PR_SET_PDEATHSIG) if it is killed.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grader.worker import libc

FLAGS = libc.CLONE_NEWNS | libc.CLONE_NEWPID | libc.CLONE_NEWNET | libc.CLONE_NEWIPC | libc.CLONE_NEWUTS
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_RO = libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV


@dataclass
class MountPlan:
    new_root: str                     # an empty folder to build the new root on (the grader made it)
    workdir: str                      # bound read-write at the same path
    read_only: list[str] = field(default_factory=list)   # bound read-only at the same paths
    masked: list[str] = field(default_factory=list)      # hidden under an empty tmpfs if they show up
    devices: list[str] = field(default_factory=list)     # more /dev entries (GPUs)
    tmp_size: int = 256 * 2**20       # bytes of /tmp and of /dev/shm (charged to the worker's memory)


def runtime_paths() -> list[str]:
    """What a worker must read: system libraries, the Python runtime, the grader package."""
    import site

    import grader

    paths = ["/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/sys"]
    paths += [sys.base_prefix, sys.prefix, sys.exec_prefix, sys.base_exec_prefix]
    paths += [*site.getsitepackages(), str(Path(grader.__file__).resolve().parent)]
    paths += [str(Path(sys.executable).resolve().parent)]
    existing = sorted({os.path.realpath(p) for p in paths if os.path.exists(p)}, key=len)
    kept: list[str] = []
    for path in existing:   # drop what an earlier (shorter) path already holds
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def gpu_devices() -> list[str]:
    try:
        names = os.listdir("/dev")
    except OSError:
        return []
    found = [f"/dev/{n}" for n in names if n.startswith("nvidia")]
    return found + (["/dev/dri"] if os.path.isdir("/dev/dri") else [])


def enter(plan: MountPlan) -> None:
    """Unshare, fork, build the mounts; returns only in the worker (pid 1 of its namespace)."""
    libc.unshare(FLAGS)
    child = os.fork()
    if child:
        _supervise(child)   # never returns
    # If the supervisor is killed, so is the worker, and with it (pid 1) its whole namespace
    # (set again after the change of uid, which clears it: sandbox.enter). Killed before this
    # line, the grader's kill of the supervisor's process group took the worker too.
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    _loopback_up()
    _build_root(plan)


def _loopback_up() -> None:
    """A new network namespace has only `lo`, and it is down: bring it up (ioctl SIOCSIFFLAGS)."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def _supervise(child: int) -> None:
    """The supervisor: exit as the worker did; the grader kills this process's group to stop both."""
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)   # the template went: so do we
    for fd in range(3, 1024):   # holds nothing of the worker's: pipes stay the worker's alone
        try:
            os.close(fd)
        except OSError:
            pass
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(1)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _build_root(plan: MountPlan) -> None:
    root = plan.new_root
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    libc.mount("tmpfs", root, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=1m,mode=0755")
    os.mkdir(f"{root}/tmp")
    libc.mount("tmpfs", f"{root}/tmp", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV,
               f"size={plan.tmp_size},mode=1777")
    for path in plan.read_only:   # shortest first, so that a bind inside another lands on top
        _bind(path, root + path, read_only=True)
    _bind(plan.workdir, root + plan.workdir, read_only=False)
    _make_dev(root, plan)
    for path in plan.masked:   # a hidden folder that lies inside a bound one (a course under /opt)
        if os.path.isdir(root + path):
            libc.mount("tmpfs", root + path, "tmpfs", libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV,
                       "size=4k,mode=0")
    os.mkdir(f"{root}/proc")
    libc.mount("proc", f"{root}/proc", "proc", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
    os.mkdir(f"{root}/.old")
    libc.pivot_root(root, f"{root}/.old")
    os.chdir("/")
    libc.umount2("/.old", libc.MNT_DETACH)
    os.rmdir("/.old")
    libc.mount(None, "/", None, libc.MS_REMOUNT | libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV)


def _bind(source: str, target: str, read_only: bool) -> None:
    try:
        st = os.stat(source)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "w").close()
    libc.mount(source, target, None, libc.MS_BIND)   # not recursive: /sys's cgroup mounts stay out
    if read_only:
        libc.mount(None, target, None, _RO)


def _make_dev(root: str, plan: MountPlan) -> None:
    dev = f"{root}/dev"
    os.makedirs(dev, exist_ok=True)
    libc.mount("tmpfs", dev, "tmpfs", libc.MS_NOSUID, "size=64k,mode=0755")
    for name in DEVICES:
        _bind(f"/dev/{name}", f"{dev}/{name}", read_only=False)
    for path in plan.devices:
        _bind(path, root + path, read_only=False)
    os.mkdir(f"{dev}/shm")
    libc.mount("tmpfs", f"{dev}/shm", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV,
               f"size={plan.tmp_size},mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
