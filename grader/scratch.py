"""Temporary folders: all of one llmgrade process's under one root, gone when it ends.

    from grader import scratch
    folder = scratch.mkdtemp("llmgrade-grade-")     # under /tmp/llmgrade-run-<pid>-<start>-XXXX/

The root is removed when the process exits normally (atexit), after a signal that click or
a command turns into an exit, and, when the process was killed outright (SIGKILL, the OOM
killer, a lost Slurm job), by the next llmgrade process that makes scratch space: the root's
name holds its owner's pid and start time, and a root whose owner is gone is swept. A batch
(`grade-all`) sweeps after its grading processes end, so a killed one leaves nothing.

The root is 0711: workers (other uids) reach their own folder inside it by name and list
nothing; each folder made here is 0700 unless its maker opens it (client.WorkerSession).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "llmgrade-run-"
_NAME = re.compile(re.escape(PREFIX) + r"(\d+)-(\d+)-")

_root: Path | None = None
_root_pid = 0


def mkdtemp(prefix: str) -> Path:
    """A new folder under this process's scratch root."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root()))


def root() -> Path:
    """This process's scratch root (made on first use; a forked child makes its own)."""
    global _root, _root_pid
    pid = os.getpid()
    if _root is None or _root_pid != pid:
        sweep()
        _root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{pid}-{_start_time(pid)}-"))
        os.chmod(_root, 0o711)
        _root_pid = pid
        atexit.register(_remove, _root, pid)
    return _root


def sweep(folder: str | None = None) -> list[Path]:
    """Remove the scratch roots whose owning process is gone; returns them."""
    base = Path(folder or tempfile.gettempdir())
    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        match = _NAME.match(name)
        if match and not _alive(int(match[1]), int(match[2])):
            shutil.rmtree(base / name, ignore_errors=True)
            removed.append(base / name)
    return removed


def _remove(path: Path, owner: int) -> None:
    if os.getpid() == owner:   # not in a forked child that inherited the atexit entry
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int, start: int) -> bool:
    """Whether process `pid` still runs and is the one that started at `start` (pids are reused)."""
    return _start_time(pid) == start


def _start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (/proc/PID/stat, field 22); -1 if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()   # the name may hold spaces and ")"
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return -1
