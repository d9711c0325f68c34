"""The template process that workers are forked from.

Started once per grading process (see forks.Template), it
imports torch and the worker code, then waits on a Unix seqpacket socket for requests
from the grader: `fork` (with the new worker's two pipe ends attached as file
descriptors) answers the child's pid; `wait` answers how a child ended. It
never runs submission code itself: a child closes the control socket before
doing anything else. Messages are JSON, never pickle.

It dies with its grading process (PR_SET_PDEATHSIG), is not dumpable (no worker can
ptrace it or read its memory), and is a child subreaper: a process a worker left
behind (a `setsid` + double-fork daemon) becomes the template's child when its parent
exits, and is killed at the next request, whatever the isolation level.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import time

import torch  # noqa: F401 -- the point of the template: imported once, shared by every fork

from grader.worker import fixtures, libc, sandbox, server, syscalls  # noqa: F401 -- syscalls: libseccomp loads here, before any filter


class Template:
    def __init__(self, control: socket.socket):
        self.control = control
        self.ended: dict[int, int] = {}   # pid -> exit code (negative: killed by that signal)
        self.workers: set[int] = set()    # live workers it forked

    def run(self, preloads: list[str] = ()) -> None:
        """Serve requests until the grading process closes the socket. `preloads` are imported
        one at a time whenever no request is waiting: the first fork is not held up by them."""
        preloads = list(preloads)
        while True:
            while preloads and not select.select([self.control], [], [], 0)[0]:
                preload(preloads.pop(0))
            message, fds, _flags, _addr = socket.recv_fds(self.control, 1 << 16, 2)
            if not message:
                self.shutdown()
                return
            self.kill_strays()
            request = json.loads(message)
            if request["op"] == "fork":
                fixtures.load(request.get("fixture_files") or [])   # once each: every later fork has them
                for name in fixtures.preloads(request.get("stage", "")):   # a stage not named at the start
                    preload(name)
                self.reply({"pid": self.fork(request["config"], fds)})
            elif request["op"] == "wait":
                self.reply({"code": self.wait(request["pid"], request["timeout"])})
            elif request["op"] == "sweep":
                self.reply({"killed": self.sweep([int(p) for p in request["pids"]])})

    def reply(self, message: dict) -> None:
        self.control.send(json.dumps(message).encode())

    def reap(self) -> None:
        """Collect every ended child, so none lingers as a zombie."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            self.ended[pid] = os.waitstatus_to_exitcode(status)
            self.workers.discard(pid)

    def kill_strays(self, timeout: float = 0.0) -> None:
        """SIGKILL every child that is not a worker (orphans of workers, adopted as subreaper). With
        a `timeout`, again as their own children are adopted in turn (a setsid daemon's child
        becomes the template's only once the daemon is dead: one pass leaves it alive, to rewrite
        a results file while the grading process waits for its next submission), until none is
        left, dead or alive, or the timeout has passed."""
        deadline = time.monotonic() + timeout
        while True:
            self.reap()
            strays = self.children() - self.workers
            if not strays:
                return
            for pid in strays:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if time.monotonic() >= deadline:
                return
            time.sleep(0.005)

    def children(self) -> set[int]:
        """Its live children, from /proc: the workers and whatever it adopted."""
        me, found = str(os.getpid()), set()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    ppid = stat.read().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                continue
            if ppid == me:
                found.add(int(entry.name))
        return found

    def shutdown(self, timeout: float = 2.0) -> None:
        """The grading process closed the socket (or is gone): nothing forked from here may outlive
        the template, whose orphans would go to init. Kill the workers and what it adopted, again
        as their descendants are adopted in turn, until no child is left."""
        self.workers |= self.children()
        self.sweep(sorted(self.workers), wait=0.2, strays_timeout=timeout)

    def sweep(self, pids: list[int], wait: float = 2.0, strays_timeout: float = 2.0) -> int:
        """Between two submissions: none of its workers (`pids`) may be left, nor any orphan.
        Kill what is; returns how many of those workers were still alive."""
        left = sorted(self.workers & set(pids))
        for pid in left:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in left:
            self.wait(pid, wait)
        self.kill_strays(strays_timeout)
        return len(left)

    def fork(self, config: dict, fds: list[int]) -> int:
        pid = os.fork()
        if pid == 0:  # the worker
            self.control.close()
            server.main(fds[0], fds[1], sandbox.SandboxConfig(**config))
        for fd in fds:
            os.close(fd)
        self.workers.add(pid)
        return pid

    def wait(self, pid: int, timeout: float) -> int | None:
        """How `pid` ended, waiting up to `timeout` for it; None if it still runs, or if it is
        not a live worker of this template (its exit code was already collected: no waiting)."""
        deadline = time.monotonic() + timeout
        while pid not in self.ended:
            self.reap()
            if pid in self.ended:
                break
            if pid not in self.workers or time.monotonic() >= deadline:
                return None
            time.sleep(0.01)
        return self.ended.pop(pid)


# Modules torch imports on first use that a worker would otherwise import itself: autograd's
# backward imports symbolic_shapes (sympy: 0.25-0.5 s, 35 MB), which most stages use. Imported
# here once, it is shared by every fork instead of paid by each; imported while no request waits
# (after the first fork), it stays off a cold grading's start. A stage whose workers need another
# (training's optimizers: torch._dynamo, 0.6-1.1 s) names it in its fixture file's PRELOAD: it is
# imported at the start when the grading process says it grades that stage (or any), else before
# that stage's first fork, and never by a grading without that stage.
PRELOAD = ("torch.fx.experimental.symbolic_shapes",)


def preload(name: str) -> None:
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 -- an older torch without it: the worker imports what it needs
        pass
    gc.collect()
    gc.freeze()   # see main(): the new objects, too, are shared by later forks, never visited


def main() -> None:
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:   # the grading process is already gone
        os._exit(1)
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
    fixture_files = json.loads(sys.stdin.readline() or "[]")   # the line after grader's path
    stages = json.loads(sys.stdin.readline() or "null")        # those it will fork for (null: any)
    sys.stdin = open(os.devnull)
    control = socket.socket(fileno=int(sys.argv[1]))
    fixtures.load(fixture_files)   # GPT-2's ranks, the training models: shared by every fork
    for name in fixtures.preloads(*(stages if stages is not None else fixtures.stages())):
        preload(name)
    # Every fork shares the template's pages until it writes to them. The cyclic collector
    # writes to the header of every object it visits, so a worker's first collection would
    # copy the pages of torch's whole Python heap (tens of MB per worker); frozen objects are
    # never visited. Reference counts still copy the pages of the objects a worker uses.
    gc.collect()
    gc.freeze()
    Template(control).run(PRELOAD)
    # The grading process closed the socket: leave without the interpreter's teardown (with torch,
    # sympy and dynamo loaded it takes most of a second, which the grading process waits for).
    os._exit(0)


if __name__ == "__main__":
    main()
