"""The cgroup layer: one control group per worker, with a memory and a process limit.

The kernel charges a cgroup for every page its processes touch, files they write to
a tmpfs (`/tmp`, `/dev/shm`) included, so a worker cannot hide memory where the
address-space rlimit does not look. The grading process (root) makes the group; the
worker joins it before it gives up root, and every process it starts is in it too.

cgroup v1 (these machines: `memory` and `pids` mounted under /sys/fs/cgroup) and v2
(one unified hierarchy with both controllers delegated to our subtree) are supported.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
GROUP = "llmgrade"
# worker-u<uid>-g<grading pid>-<serial> (a uid of the pool), worker-p<grading pid>-<serial> (no
# uid layer); before: worker-u<uid>-<serial>, and before 2026-12 worker-<uid or pid>-<serial>.
_NAME = re.compile(r"^worker-(u|p)?(\d+)(?:-g(\d+))?-\d+$")


@dataclass
class WorkerGroup:
    """The cgroup folders of one worker (one per controller on v1, one on v2)."""

    folders: list[str]
    version: int

    def procs(self) -> set[int]:
        found: set[int] = set()
        for folder in self.folders:
            try:
                found |= {int(p) for p in Path(folder, "cgroup.procs").read_text().split()}
            except (OSError, ValueError):
                pass
        return found

    def memory_bytes(self) -> int:
        """Anonymous memory plus tmpfs/shm files of the group: what the worker holds, not the
        page cache of files it read (which the kernel reclaims before it would kill)."""
        keys = ("total_rss", "total_shmem") if self.version == 1 else ("anon", "shmem")
        for folder in self.folders:
            try:
                stat = dict(line.split() for line in Path(folder, "memory.stat").read_text().splitlines())
                return sum(int(stat.get(key, 0)) for key in keys)
            except (OSError, ValueError):
                continue
        return 0

    def kill(self, timeout: float = 2.0) -> bool:
        """SIGKILL every process in the group until it is empty; True once empty."""
        from grader.worker.identity import kill_until_gone

        return kill_until_gone(self.procs, timeout)

    def remove(self, timeout: float = 1.0) -> None:
        """Remove the group's folders. Right after its last process was killed the kernel may
        still count it (EBUSY while the exiting task is charged to the pids controller): retry
        briefly; a folder that stays is removed by a later worker (remove_stale)."""
        deadline = time.monotonic() + timeout
        for folder in self.folders:
            while True:
                try:
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.005)


def remove_tree(top: Path | str, timeout: float = 1.0) -> None:
    """Remove a group made to hold a grading (a job's, a container's, a test's) with the worker
    groups nested in it, deepest first; what still has processes stays."""
    top = Path(top)
    if top.is_dir():
        nested = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        WorkerGroup([str(p) for p in [*nested, top]], 1).remove(timeout)


def version() -> int:
    """2 for a unified hierarchy at /sys/fs/cgroup, 1 for v1 controllers, 0 for neither."""
    if _is_cgroup2(ROOT):
        return 2
    return 1 if (ROOT / "memory").is_dir() and (ROOT / "pids").is_dir() else 0


def _is_cgroup2(path: Path) -> bool:
    try:
        with open("/proc/self/mounts") as mounts:
            return any(line.split()[1] == str(path) and line.split()[2] == "cgroup2" for line in mounts)
    except OSError:
        return False


def _parents(v: int) -> list[Path]:
    """Where worker groups go: inside this process's own cgroup, so that a job's limits (Slurm's
    cgroup, a container's, a systemd slice's) hold for the workers too. On v2 that needs the
    controllers delegated through our own group, which the kernel refuses while it holds
    processes (ours, a job's shell): then the hierarchy's top (`_v2_top`)."""
    if v == 1:
        return [ROOT / "memory" / _own_path("memory") / GROUP, ROOT / "pids" / _own_path("pids") / GROUP]
    return [_v2_top() / GROUP]


def _own_path(controller: str = "") -> str:
    """This process's cgroup for `controller` (v1) or in the unified hierarchy (""), relative."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(",") or (not controller and not controllers):
                return path.lstrip("/")
    except (OSError, ValueError):
        pass
    return ""


_top: Path | None = None


def _v2_top() -> Path:
    """Our own v2 group when memory and pids can be delegated through it, else the root."""
    global _top
    if _top is None:
        own = ROOT / _own_path()
        _top = own if own == ROOT or _delegated(own) else ROOT
    return _top


def _delegated(group: Path) -> bool:
    try:
        if not {"memory", "pids"} <= set((group / "cgroup.subtree_control").read_text().split()):
            (group / "cgroup.subtree_control").write_text("+memory +pids")
        return True
    except OSError:   # EBUSY: processes in it; ENOENT/EACCES: not ours to change
        return False


def usable() -> str:
    """'' when this process can make worker cgroups here, else why not."""
    v = version()
    if not v:
        return "no cgroup memory and pids controllers are mounted under /sys/fs/cgroup"
    if os.geteuid() != 0:
        return "only root can make cgroups"
    try:
        for parent in _parents(v):
            parent.mkdir(exist_ok=True)
            # mkdir(exist_ok) succeeds on a read-only mount when the folder is already there
            # (Docker's read-only cgroups over a host that made it): make and remove a group.
            probe = parent / f"probe-{os.getpid()}"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
        if v == 2:
            top = _v2_top()
            controllers = (top / "cgroup.subtree_control").read_text().split()
            if not {"memory", "pids"} <= set(controllers):
                (top / "cgroup.subtree_control").write_text("+memory +pids")
            (top / GROUP / "cgroup.subtree_control").write_text("+memory +pids")
    except OSError as exc:
        return f"cannot make a cgroup under {ROOT} ({exc.strerror or exc})"
    return ""


def group_name(uid: int | None, serial: int) -> str:
    """The name of a worker's group: its owner (the uid it runs as, and the grading process; else
    the grading process)."""
    return f"worker-u{uid}-g{os.getpid()}-{serial}" if uid is not None else f"worker-p{os.getpid()}-{serial}"


def remove_stale(uid: int | None, pool: range = range(0)) -> int:
    """Remove the groups that gradings killed outright left behind (their `WorkerGroup.remove`
    never ran); returns how many. A group goes only when its owner is gone: named for `uid`,
    whose lease the caller holds (so no live grading can own it), or for a grading process that
    has ended. Removing an empty group that a live grading has just made would break its
    worker's join. The kernel refuses to remove a group with processes in it: those stay."""
    v = version()
    if not v:
        return 0
    removed = 0
    for parent in _parents(v):
        try:
            names = [entry.name for entry in os.scandir(parent) if entry.is_dir()]
        except OSError:
            continue
        for name in names:
            match = _NAME.match(name)
            if not match:
                continue
            kind, number = match[1] or ("u" if int(match[2]) in pool else "p"), int(match[2])
            grading = int(match[3]) if match[3] else (number if kind == "p" else None)
            gone = (kind == "u" and number == uid) or (grading is not None and not Path(f"/proc/{grading}").exists())
            if gone:
                try:
                    os.rmdir(parent / name)
                    removed += 1
                except OSError:
                    pass
    return removed


def create(name: str, memory_limit: int | None, max_processes: int) -> WorkerGroup:
    """A fresh group `name` (a stale one of the same name is emptied first)."""
    v = version()
    folders = []
    for parent in _parents(v):
        folder = parent / name
        folder.mkdir(exist_ok=True)
        folders.append(str(folder))
    group = WorkerGroup(folders, v)
    group.kill()
    if v == 1:
        memory, pids = (Path(f) for f in folders)
        memsw = memory / "memory.memsw.limit_in_bytes"
        if memory_limit is not None:
            if memsw.exists():   # lifted first: it may never be below memory.limit_in_bytes
                memsw.write_text("-1")
            (memory / "memory.limit_in_bytes").write_text(str(memory_limit))
            if (memory / "memory.memsw.limit_in_bytes").exists():   # and no swapping past it
                (memory / "memory.memsw.limit_in_bytes").write_text(str(memory_limit))
        (pids / "pids.max").write_text(str(max_processes))
    else:
        folder = Path(folders[0])
        if memory_limit is not None:
            (folder / "memory.max").write_text(str(memory_limit))
            if (folder / "memory.swap.max").exists():
                (folder / "memory.swap.max").write_text("0")
        (folder / "pids.max").write_text(str(max_processes))
    return group


def join(folders: list[str]) -> None:
    """Move this process into the worker's group (called in the worker, still root)."""
    for folder in folders:
        Path(folder, "cgroup.procs").write_text(str(os.getpid()))
