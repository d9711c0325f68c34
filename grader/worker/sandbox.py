"""What a worker does to itself, in this order, before it imports any submission code.

    1. own session (the grader kills its process group), stdout/stderr into a capped file,
       every other inherited file descriptor closed, first in line for the OOM killer;
    2. cgroup: joins its memory and pids groups (cgroups.py), still root;
    3. namespaces: unshares mount, pid, network, ipc and uts, and builds its allow-listed
       root (namespaces.py); from here on it is pid 1 of its own namespace;
    4. rlimits: address space, file size, processes, open files, CPU time, no core dumps;
    5. uid: becomes its own unprivileged uid, no groups, no capabilities (identity.py);
       no new privileges;
    6. environment, working folder, import path, seeds, torch threads;
    7. seccomp: the kernel refuses programs, ptrace, mounts, ... (syscalls.py);
    8. the audit hook: Python-level file, socket and signal checks (defence in depth).

Which of 2, 3, 5 and 7 run is decided by the grading process (layers.py) and passed
in the config; 1, 4, 6 and 8 always run. The grading process never trusts what the
worker says anyway: the grade, the hidden tests and the references live only there.
"""

from __future__ import annotations

import hashlib
import os
import random
import resource
import signal
import sys
from dataclasses import dataclass, field

from grader.worker import cgroups, identity, libc, namespaces

DEFAULT_MEMORY_LIMIT = 4 * 2**30
DEFAULT_OUTPUT_LIMIT = 16 * 2**20
MAX_PROCESSES = 256        # processes and threads of the worker's uid (a fork bomb stops here)
MAX_OPEN_FILES = 1024
CPU_SECONDS = 1800         # a backstop: the per-call timeout stops a worker long before


@dataclass
class SandboxConfig:
    workdir: str                      # the worker's own folder: submission/, tmp/ and output.txt
    submission_dir: str               # workdir/submission: cwd and first on sys.path
    output_path: str                  # where stdout and stderr go
    hidden_digests: list[str] = field(default_factory=list)   # see path_digest: never the paths
    memory_limit: int | None = DEFAULT_MEMORY_LIMIT   # bytes of address space beyond start-up
    # CUDA reserves address space for all of the GPU's and the host's memory when it starts
    # (cudaGetDeviceCount fails with "out of memory" under any useful RLIMIT_AS): on a machine
    # with a GPU the memory limit is the cgroup's and the client's watchdog's, not RLIMIT_AS.
    limit_address_space: bool = True
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    max_bytes: int = 512 * 2**20      # largest message either way
    keep_fds: tuple[int, ...] = ()
    seed: int = 0
    threads: int = 1                  # torch's intra-op threads (see enter)
    uid: int | None = None            # layer 5: the uid to become (None: stay who we are)
    mounts: dict | None = None        # layer 3: a namespaces.MountPlan as a dict (None: no namespaces)
    cgroup_folders: list[str] = field(default_factory=list)   # layer 2
    seccomp: bool = False             # layer 7


# Exit codes the client reads as "the grader's side of the worker broke" (not the student's code):
# the traceback is the last thing in the worker's output file (client.Worker._death shows it).
START_FAILED = 86    # enter() or the Worker raised: this machine's set-up, never a submission
SERVE_FAILED = 87    # the request loop itself raised (framing, a reply that cannot be written)


def enter(config: SandboxConfig) -> None:
    os.setsid()
    _redirect_output(config.output_path)
    _close_fds(config.keep_fds)
    _oom_first()
    if config.cgroup_folders:
        cgroups.join(config.cgroup_folders)
    if config.mounts is not None:
        namespaces.enter(namespaces.MountPlan(**config.mounts))
    _limit_resources(config)
    parent = os.getppid()
    if config.uid is not None:
        identity.drop_to(config.uid)
    # Dies with its parent (the template, or the namespace's supervisor). Set after the change of
    # uid, which clears it; a parent already gone shows as a new parent pid (0 in a pid namespace).
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
    libc.prctl(libc.PR_SET_DUMPABLE, 1)   # its own /proc files stay its own (ptrace is refused anyway)
    _clean_environment(config)
    os.chdir(config.submission_dir)
    hook = _AuditHook(config)
    sys.path[:] = [config.submission_dir] + [p for p in sys.path if p and not hook.is_hidden(p)]
    _seed(config.seed)
    # One thread by default: on a shared or small machine several OpenMP threads per worker
    # oversubscribe the cores (training ran 10-15x slower with 2 threads than with 1 on 2 busy
    # cores), and grade-all runs several workers side by side anyway.
    _threads(config.threads)
    if config.seccomp:
        from grader.worker import syscalls

        syscalls.load(allow_inet=config.mounts is not None)
    sys.addaudithook(hook)


def _redirect_output(path: str) -> None:
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(devnull)
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)


def _close_fds(keep: tuple[int, ...]) -> None:
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 4096)


def _oom_first() -> None:
    """When the machine or the container (Gradescope: 768 MB, one cgroup for everything) runs
    out of memory, the kernel kills the process with the highest score: a worker, never the
    grading process, whose results would be lost. The worker's death fails that one test.
    Raising one's own score needs no privilege; the processes it starts inherit it."""
    try:
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("1000")
    except OSError:
        pass


def _limit_resources(config: SandboxConfig) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))
    if config.uid is not None:   # counted per uid: only meaningful for a uid of its own
        resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, not the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (config.output_limit, config.output_limit))
    if config.memory_limit is not None and config.limit_address_space:
        limit = _address_space() + config.memory_limit
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _address_space() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _clean_environment(config: SandboxConfig) -> None:
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "OMP_NUM_THREADS",
                                       "CUDA_VISIBLE_DEVICES", "MKL_NUM_THREADS") if k in os.environ}
    tmp = "/tmp" if config.mounts is not None else os.path.join(config.workdir, "tmp")   # private there
    os.makedirs(tmp, exist_ok=True)
    os.environ.clear()
    # USER and LOGNAME: getpass.getuser() reads them before the password database, which has no
    # entry for a worker's uid (torch.optim imports torch._dynamo, which asks for the user name).
    os.environ.update(keep, HOME=config.workdir, TMPDIR=tmp, PYTHONDONTWRITEBYTECODE="1",
                      USER="llmgrade-worker", LOGNAME="llmgrade-worker")
    sys.dont_write_bytecode = True


def _seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def _depth(path: str, roots: list[str]) -> int:
    """Length of the longest root that `path` lies in (0 for none)."""
    return max((len(root) for root in roots
                if path == root or path.startswith(root.rstrip(os.sep) + os.sep)), default=0)


def path_digest(path: str) -> str:
    """How the grader names a hidden path to the worker: the worker never gets the path itself."""
    return hashlib.sha256(os.path.realpath(path).encode()).hexdigest()


def _hidden_ancestor(path: str, digests: set[str]) -> int:
    """Length of the longest ancestor of `path` (itself included) that is hidden, or 0."""
    while True:
        if hashlib.sha256(path.encode()).hexdigest() in digests:
            return len(path)
        parent = os.path.dirname(path)
        if parent == path:
            return 0
        path = parent


def _unix_socket(event: str, args: tuple) -> bool:
    """Whether a socket audit event is about an AF_UNIX socket (local pipes: multiprocessing uses them)."""
    import socket

    if event == "socket.__new__":
        return len(args) > 1 and args[1] == socket.AF_UNIX
    sock = args[0] if args else None
    return getattr(sock, "family", None) == socket.AF_UNIX


class _AuditHook:
    """Refuses, inside the worker, what a submission has no business doing."""

    def __init__(self, config: SandboxConfig):
        self.allowed = [os.path.realpath(p) for p in (
            config.workdir, os.path.dirname(os.path.dirname(__file__)),
            sys.prefix, sys.base_prefix, sys.exec_prefix)]
        self.hidden = set(config.hidden_digests)
        self.group = os.getpgid(0)
        # In its own network namespace (loopback only) a connection fails the ordinary way;
        # elsewhere internet sockets are refused here, and by seccomp underneath.
        self.allow_inet = config.mounts is not None

    def __call__(self, event: str, args: tuple) -> None:
        if event in ("open", "os.listdir", "os.scandir", "os.link", "os.symlink", "os.rename",
                     "os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.truncate", "shutil.rmtree"):
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)) and self.is_hidden(arg):
                    raise PermissionError(f"the grader's files are off limits: {os.fsdecode(arg)}")
        elif event.startswith("socket.") and not self.allow_inet and not _unix_socket(event, args):
            raise PermissionError("network access is not allowed while grading")
        elif event in ("os.kill", "os.killpg"):
            pid = args[0]
            if pid not in (0, os.getpid()) and not self.in_group(pid, event):
                raise PermissionError("signals to other processes are not allowed while grading")

    def is_hidden(self, path) -> bool:
        """The most specific root decides: the worker's own folder inside a hidden one is fine."""
        real = os.path.realpath(os.fsdecode(path))
        return _hidden_ancestor(real, self.hidden) > _depth(real, self.allowed)

    def in_group(self, pid: int, event: str) -> bool:
        if event == "os.killpg":
            return pid == self.group
        try:
            return pid > 0 and os.getpgid(pid) == self.group
        except OSError:
            return False
