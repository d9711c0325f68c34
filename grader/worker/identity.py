"""The identity layer: when the grader is root, every worker runs as a uid of its own.

A pool of numeric ids (no passwd entries needed), one per live worker: a worker's
uid is taken by holding an flock on `<lock dir>/uid-N.lock`, so any number of
grading processes on the machine (a `grade-all` batch, two instructors' `grade`
commands) never share one. With its own uid a worker cannot signal, ptrace or read
the memory of the grader or of any other worker, cannot write the Python runtime or
the grader package (root's files), and cannot read the course tree once its folders
lose their "other" permission bits (`protect`).

Ending a worker ends every process of its uid (`kill_all`), and the files it left in
the machine's shared writable folders (`sweep_files`): the fallback where there are no
namespaces (a Docker container) and a check where there are.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

FIRST_UID = 62000          # below 65534 (nobody) and inside Docker's default 16-bit id map
POOL_SIZE = 256
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue", "/run/lock", "/var/lock")


def lock_dir() -> Path:
    """Root-only folder holding the pool's lock files."""
    for base in ("/run", tempfile.gettempdir()):
        folder = Path(base) / "llmgrade-uids"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            if folder.stat().st_uid == os.geteuid() and not folder.is_symlink():
                os.chmod(folder, 0o700)
                return folder
        except OSError:
            continue
    raise OSError("no folder for the uid pool's lock files (/run and the temp folder are not writable)")


@dataclass
class Lease:
    """A uid (and gid of the same number) held by this process until `release`."""

    uid: int
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)   # closing drops the flock
            self.fd = -1


def acquire() -> Lease:
    """The first free uid of the pool; its leftovers (processes, files) are cleared first."""
    folder = lock_dir()
    start = os.getpid() % POOL_SIZE   # processes starting together try different ids first
    for i in range(POOL_SIZE):
        uid = FIRST_UID + (start + i) % POOL_SIZE
        fd = os.open(folder / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        kill_all(uid)       # a grader that crashed may have left them
        sweep_files(uid)
        return Lease(uid, fd)
    raise OSError(f"all {POOL_SIZE} worker uids are in use")


def drop_to(uid: int) -> None:
    """Become `uid` for good (in the worker, before any submission code): no groups, no capabilities."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != uid:
        raise OSError("the worker could not change its user id")


def processes_of(uid: int) -> list[int]:
    """Live processes whose real or effective uid is `uid` (zombies are already dead)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except (OSError, ValueError):
            continue
        uids = fields.get("Uid", "").split()
        if fields.get("State", "").split()[:1] in (["Z"], ["X"]):
            continue
        if str(uid) in uids[:2]:
            found.append(int(entry.name))
    return found


def kill_all(uid: int, timeout: float = 3.0) -> bool:
    """SIGKILL every process of `uid` until none is left; True once none is."""
    return kill_until_gone(lambda: processes_of(uid), timeout)


def kill_until_gone(find, timeout: float) -> bool:
    """SIGKILL the pids `find()` returns until it returns none; True once it does (False at `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = find()
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def sweep_files(uid: int) -> list[str]:
    """Remove what `uid` left in the machine's shared writable folders; returns the paths.

    A uid with no groups can only make entries in folders it owns (removed whole) or that anyone
    may write to: the shared folders, and world-writable folders inside them (/tmp/.X11-unix),
    which are searched too, a few levels deep, never through a symbolic link."""
    removed: list[str] = []
    for folder in SHARED_WRITABLE:
        _sweep(folder, uid, removed, depth=4)
    return removed


def _sweep(folder: str, uid: int, removed: list[str], depth: int) -> None:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
            if st.st_uid != uid:
                if (depth > 1 and stat.S_ISDIR(st.st_mode)
                        and st.st_mode & (stat.S_IWOTH | stat.S_IXOTH) == stat.S_IWOTH | stat.S_IXOTH):
                    _sweep(entry.path, uid, removed, depth - 1)
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(entry.path, ignore_errors=True)   # never follows symlinks
            else:
                os.unlink(entry.path)
            removed.append(entry.path)
        except OSError:
            continue


def readable_by_others(path: Path) -> bool:
    """Whether a user with no rights but "other" can reach `path` (every ancestor searchable)."""
    path = Path(os.path.realpath(path))
    for folder in [*reversed(path.parents), path]:
        try:
            mode = folder.stat().st_mode
        except OSError:
            return False
        needed = stat.S_IXOTH | (stat.S_IROTH if folder == path else 0)
        if mode & needed != needed:
            return False
    return True


def protect(paths: list[str]) -> list[str]:
    """Take "other" permissions off each path (root's course tree, a batch's results and
    submissions), so that a worker uid cannot read it; returns the paths that changed.
    A shared folder (world-writable or sticky: /tmp) is never touched."""
    changed = []
    for path in paths:
        try:
            st = os.stat(path, follow_symlinks=False)
            if st.st_mode & (0o002 | stat.S_ISVTX):
                continue
            if st.st_mode & 0o007 and not stat.S_ISLNK(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o007)
                changed.append(path)
        except OSError:
            continue
    return changed


def grant(path: Path, uid: int) -> None:
    """Make `path` (a worker's folder, just filled by the grader) belong to `uid`, recursively."""
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), uid, uid)
    os.lchown(path, uid, uid)


def protect_course(root: Path, keep: list[str]) -> list[str]:
    """Make the course tree at `root` unreadable to worker uids, except the folders in `keep`
    (the grader package, a virtual environment) that workers must read: every other top-level
    entry loses its "other" bits, and `root` itself can be passed through but not listed."""
    root = Path(os.path.realpath(root))
    keep_real = [os.path.realpath(k) for k in keep]
    needed = {str(root / Path(k).relative_to(root).parts[0]) for k in keep_real
              if k != str(root) and k.startswith(str(root) + "/")}
    changed = protect([str(p) for p in sorted(root.iterdir()) if str(p) not in needed])
    st = os.stat(root)
    if st.st_mode & 0o006 and not st.st_mode & (0o002 | stat.S_ISVTX):
        os.chmod(root, stat.S_IMODE(st.st_mode) & ~0o006)
        changed.append(str(root))
    return changed
