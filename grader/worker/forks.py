"""The grading process's handle on its template process (template.py): start it, fork from it.

Workers are forked from one template per grading process, which has imported torch, the
worker code and the stages' fixtures, so a fresh worker costs a fork, not a Python start and
a torch import. This module imports no torch: a command starts the template first thing
(`start_early`), and the template's imports run on another core while this process does its own.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from grader.worker import fixtures

if TYPE_CHECKING:
    from grader.worker import sandbox


class TemplateStopped(RuntimeError):
    """The template process is gone (the client turns this into a WorkerFailure)."""


_TEMPLATE_BOOT = ("import sys; sys.path.insert(0, sys.stdin.readline().rstrip('\\n')); "
                  "from grader.worker.template import main; main()")


class Template:
    """The grading process's handle on its template process (see template.py)."""

    def __init__(self, start_timeout: float = 120.0, stages: list[str] | None = None):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Where to import grader from, then the stages' fixture files (loaded before the first
        # fork) and the stages this process grades (None: any; their fixture files' PRELOAD is
        # imported before the first fork too), go through stdin: in neither the command line nor
        # the environment that workers inherit (/proc/self/...).
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LLMGRADE_ROOT")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _TEMPLATE_BOOT, str(theirs.fileno())],
            pass_fds=[theirs.fileno()], env=env, cwd=tempfile.gettempdir(), stdin=subprocess.PIPE)
        self.process.stdin.write((str(Path(__file__).resolve().parents[2]) + "\n"
                                  + json.dumps(_fixture_files()) + "\n" + json.dumps(stages) + "\n").encode())
        self.process.stdin.close()
        theirs.close()
        self.socket = ours
        self.socket.settimeout(start_timeout)
        self.lock = threading.Lock()

    def ask(self, message: dict, fds: list[int] = ()) -> dict:
        with self.lock:
            socket.send_fds(self.socket, [json.dumps(message).encode()], list(fds))
            reply = self.socket.recv(1 << 16)
        if not reply:
            raise TemplateStopped("the worker template process has stopped")
        return json.loads(reply)

    def fork(self, config: sandbox.SandboxConfig, fds: list[int], stage: str = "") -> int:
        # The stages' fixture files: the template loads them (once) before it forks; the worker's
        # config never holds course paths. `stage`: whose PRELOAD modules the worker needs.
        return self.ask({"op": "fork", "config": asdict(config), "fixture_files": _fixture_files(),
                         "stage": stage}, fds)["pid"]

    def exit_code(self, pid: int, timeout: float = 5.0) -> int | None:
        return self.ask({"op": "wait", "pid": pid, "timeout": timeout})["code"]

    def alive(self) -> bool:
        return self.process.poll() is None

    def sweep(self, pids: list[int]) -> int:
        """Kill those of the workers `pids` still running and every orphan; how many workers were."""
        return self.ask({"op": "sweep", "pids": pids})["killed"]

    def close(self) -> None:
        self.socket.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()


@functools.lru_cache(maxsize=4)
def _course_fixture_files(root: str) -> tuple[str, ...]:
    return tuple(fixtures.stage_files(Path(root)))


def _fixture_files() -> list[str]:
    from grader.course import stages
    return list(_course_fixture_files(str(stages.project_root())))


_template: Template | None = None


def template(stages: list[str] | None = None) -> Template:
    """The template of this grading process, started on first use (`stages`: those it will
    grade, when known: see start_early)."""
    global _template
    if _template is None or not _template.alive():
        _template = Template(stages=stages)
        atexit.register(_template.close)
    return _template


def start_early(stages: list[str] | None = None) -> None:
    """Start the template now, without waiting for it (it imports torch meanwhile). `stages`: the
    stages this process grades, if known (empty or None: any): the template imports their fixture
    files' PRELOAD before its first fork, while its pages are still its own (imported later, it
    copies the pages it shares with the workers forked before: 48 MiB more at the peak of an
    8-stage grading), and never a PRELOAD of a stage it will not grade."""
    template(list(stages) if stages else None)


def running() -> Template | None:
    """The template if one has been started and is alive, else None (never starts one)."""
    return _template if _template is not None and _template.alive() else None
