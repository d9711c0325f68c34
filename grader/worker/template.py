"""The template process that workers are forked from.

Started once per grading process (see client.Template), it
imports torch and the worker code, then waits on a Unix seqpacket socket for requests
from the grader: `fork` (with the new worker's two pipe ends attached as file
descriptors) answers the child's pid; `wait` answers how a child ended. It
never runs submission code itself: a child closes the control socket before
doing anything else. Messages are JSON, never pickle.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

import torch  # noqa: F401 -- the point of the template: imported once, shared by every fork

from grader.worker import sandbox, server


class Template:
    def __init__(self, control: socket.socket):
        self.control = control
        self.ended: dict[int, int] = {}   # pid -> exit code (negative: killed by that signal)

    def run(self) -> None:
        while True:
            message, fds, _flags, _addr = socket.recv_fds(self.control, 1 << 16, 2)
            if not message:
                return
            self.reap()
            request = json.loads(message)
            if request["op"] == "fork":
                self.reply({"pid": self.fork(request["config"], fds)})
            elif request["op"] == "wait":
                self.reply({"code": self.wait(request["pid"], request["timeout"])})

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

    def fork(self, config: dict, fds: list[int]) -> int:
        pid = os.fork()
        if pid == 0:  # the worker
            self.control.close()
            server.main(fds[0], fds[1], sandbox.SandboxConfig(**config))
        for fd in fds:
            os.close(fd)
        return pid

    def wait(self, pid: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while pid not in self.ended:
            self.reap()
            if pid in self.ended:
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)
        return self.ended.pop(pid)


def main() -> None:
    sys.stdin = open(os.devnull)
    control = socket.socket(fileno=int(sys.argv[1]))
    Template(control).run()


if __name__ == "__main__":
    main()
