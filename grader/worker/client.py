"""The grader's side of a worker: start it, send requests, survive it.

Workers are forked from one template process per grading process
(`template.py`, which has imported torch and the worker module), so a fresh
worker costs a fork, not a Python start and a torch import. The template
never sees a submission, a reference solution or a hidden test. Each worker
gets its own copy of the submission in a private folder.

A request that times out, a worker that dies, exceeds its memory or sends a
malformed frame: the worker's whole process group is killed and the error is
raised here as a `WorkerFailure`; the next request starts a fresh worker.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from grader import scratch
from grader.worker import cgroups, codec, framing, identity, layers, live, namespaces, sandbox
from grader.worker.forks import TemplateStopped, template

OUTPUT_KEEP = 64 * 1024


class WorkerFailure(Exception):
    """The worker could not answer: timeout, crash, memory, malformed reply."""


class WorkerTimeout(WorkerFailure):
    pass


class WorkerCrashed(WorkerFailure):
    pass


class StudentException(Exception):
    """An exception raised by submission code, as data: type, MRO names, message, traceback."""

    def __init__(self, type_name: str, mro: list[str], message: str, traceback: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name, self.mro, self.message, self.traceback = type_name, mro, message, traceback

    def is_a(self, name: str) -> bool:
        return name in self.mro




@dataclass
class WorkerOptions:
    hidden_paths: list[str] = field(default_factory=list)
    memory_limit: int | None = sandbox.DEFAULT_MEMORY_LIMIT
    max_bytes: int = 512 * 2**20
    seed: int = 0
    threads: int = 1
    isolation: str = "auto"           # auto | strict (see layers.py)
    stage: str = ""                   # the stage whose tests it serves (its fixture file's PRELOAD)


class WorkerProcess:
    """One live worker over one private copy of a submission directory.

    Its layers come from `layers.isolation(options.isolation)`: a uid of its own
    (held from the pool until `close`), a cgroup, namespaces, seccomp.
    """

    def __init__(self, submission_dir: Path, options: WorkerOptions, work_root: Path):
        self.options = options
        self.isolation = layers.isolation(options.isolation)
        self.lease = identity.acquire() if self.isolation.uid else None
        self.group: cgroups.WorkerGroup | None = None
        self.pid = 0
        self.output_fd = -1
        try:
            self._start(Path(submission_dir), work_root)
        except BaseException:
            self.close()
            raise

    def _start(self, submission_dir: Path, work_root: Path) -> None:
        options, iso = self.options, self.isolation
        self.workdir = Path(tempfile.mkdtemp(prefix="worker-", dir=work_root))
        shutil.copytree(submission_dir, self.workdir / "submission", symlinks=True)
        (self.workdir / "tmp").mkdir()
        self.output_path = self.workdir / "output.txt"
        # The grader reads the output through this descriptor, never by name: a worker that owns
        # its folder could swap the file for a link to something only root may read.
        self.output_fd = os.open(self.output_path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.output_offset = 0
        uid = self.lease.uid if self.lease else None
        if uid is not None:
            identity.grant(self.workdir, uid)
        if iso.cgroups:
            limit = None if options.memory_limit is None else options.memory_limit + 2 * namespaces.MountPlan.tmp_size
            cgroups.remove_stale(uid, range(identity.FIRST_UID, identity.FIRST_UID + identity.POOL_SIZE))
            self.group = cgroups.create(cgroups.group_name(uid, id(self)), limit, sandbox.MAX_PROCESSES)
        mounts = None
        gpu = namespaces.gpu_devices()   # /dev's GPU nodes: bound into the worker's /dev, and no RLIMIT_AS
        if iso.namespaces:
            new_root = work_root / "newroot"   # the mount point of every worker's root, each in its own namespace
            new_root.mkdir(mode=0o700, exist_ok=True)
            read_only = namespaces.runtime_paths()
            hidden = [os.path.realpath(p) for p in (*options.hidden_paths, str(work_root))]
            masked = [h for h in hidden if any(_inside(h, r) for r in read_only)
                      and not any(_inside(r, h) or r == h for r in read_only)]
            mounts = asdict(namespaces.MountPlan(
                new_root=str(new_root), workdir=str(self.workdir), read_only=read_only, masked=masked,
                devices=gpu))
        config = sandbox.SandboxConfig(
            workdir=str(self.workdir), submission_dir=str(self.workdir / "submission"),
            output_path=str(self.output_path),
            hidden_digests=[sandbox.path_digest(p) for p in (*options.hidden_paths, str(work_root))],
            memory_limit=options.memory_limit, max_bytes=options.max_bytes, seed=options.seed,
            threads=options.threads, uid=uid, mounts=mounts,
            limit_address_space=not gpu,
            cgroup_folders=self.group.folders if self.group else [], seccomp=iso.seccomp)
        req_r, self.req_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        self.template = template()
        try:
            self.pid = self.template.fork(config, [req_r, resp_w], options.stage)
        except TemplateStopped as exc:
            raise WorkerFailure(str(exc)) from None
        finally:
            os.close(req_r)
            os.close(resp_w)
        self.exit_code: int | None = None

    def request(self, message: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        try:
            framing.write_frame(self.req_w, message)
            return framing.read_frame(self.resp_r, deadline=deadline,
                                      max_bytes=self.options.max_bytes, on_wait=self._watchdog)
        except framing.FrameTimeout:
            self.kill()
            raise WorkerTimeout(f"did not finish within {timeout:g} s") from None
        except (framing.FrameClosed, BrokenPipeError):
            raise WorkerCrashed(self._death()) from None
        except framing.FrameTooLarge as exc:
            self.kill()
            raise WorkerFailure(f"sent back a reply that is too large ({exc})") from None
        except BaseException:
            self.kill()  # interrupted mid-request: the worker's state is unknown
            raise

    def _watchdog(self) -> None:
        if not _alive(self.pid):
            raise framing.FrameClosed()
        limit = self.options.memory_limit
        if limit is not None and self.memory_bytes() > limit:
            self.kill()
            raise WorkerCrashed(f"used more than {limit / 2**30:g} GiB of memory and was stopped")

    def _death(self) -> str:
        code = self.template.exit_code(self.pid)
        self.kill()
        if code is None:
            return "stopped answering"
        if code < 0:
            name = signal.Signals(-code).name
            why = {"SIGSEGV": "a segmentation fault", "SIGKILL": "most likely out of memory",
                   "SIGABRT": "an abort", "SIGBUS": "a bus error"}.get(name, "a signal")
            return f"crashed: the worker process was killed by {name} ({why})"
        if code in (sandbox.START_FAILED, sandbox.SERVE_FAILED):   # the grader's side broke: say where, for the TA
            what = "could not start" if code == sandbox.START_FAILED else "broke while serving a request"
            return f"grader error: the worker {what}: {self._last_error()}"
        return f"exited: the worker process ended with exit code {code} (os._exit or a crash)"

    def _last_error(self) -> str:
        """The last line of the traceback the worker wrote before a START_FAILED/SERVE_FAILED exit."""
        try:
            end = os.fstat(self.output_fd).st_size
            tail = os.pread(self.output_fd, min(end, 8192), max(0, end - 8192)).decode(errors="replace")
        except OSError:
            return "(its output could not be read)"
        lines = [line for line in tail.split("llmgrade worker: ")[-1].splitlines() if line.strip()]
        return lines[-1].strip() if lines else "(no traceback)"

    @property
    def code_pid(self) -> int:
        """The process that runs the submission (what timing measures): the worker itself, or,
        in a pid namespace, the supervisor's one child."""
        if getattr(self, "_code_pid", None) is None:
            self._code_pid = _child_of(self.pid) if self.isolation.namespaces else self.pid
        return self._code_pid or self.pid

    def memory_bytes(self) -> int:
        """What the worker holds: its cgroup's charge, or the resident memory of its processes."""
        if self.group is not None:
            return self.group.memory_bytes()
        if self.lease is not None:   # proportional: pages shared with the template count once in all
            return sum(_proportional_bytes(pid) for pid in identity.processes_of(self.lease.uid))
        return _resident_bytes(self.pid)

    def new_output(self) -> str:
        """What the submission printed since the last call (the last 64 KiB of it)."""
        try:
            end = os.fstat(self.output_fd).st_size
            start = max(self.output_offset, end - OUTPUT_KEEP)
            data = os.pread(self.output_fd, end - start, start)
        except OSError:
            return ""
        self.output_offset = start + len(data)
        return data.decode("utf-8", errors="replace")

    def kill(self) -> None:
        if self.pid:
            for kill in (os.killpg, os.kill):
                try:
                    kill(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if self.group is not None:
            self.group.kill()

    def close(self) -> None:
        """Kill the worker and everything it started, confirm they are gone, remove what it left."""
        self.kill()
        for fd in (getattr(self, "req_w", -1), getattr(self, "resp_r", -1), self.output_fd):
            if fd >= 0:
                os.close(fd)
        self.output_fd = -1
        if self.pid and self.template.alive():
            self.template.exit_code(self.pid, timeout=0.5)  # reap it (if _death has, answered at once)
        if self.lease is not None:
            if not identity.kill_all(self.lease.uid):
                raise WorkerFailure(f"processes of worker uid {self.lease.uid} survived SIGKILL")
            identity.sweep_files(self.lease.uid)
        if self.group is not None:
            self.group.kill()
            self.group.remove()
        if hasattr(self, "workdir"):
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self.lease is not None:
            self.lease.release()


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


def _alive(pid: int) -> bool:
    """False once the process has ended (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _child_of(pid: int) -> int | None:
    """The (first) child of `pid`, from the kernel's list, or None."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
    except (OSError, ValueError):
        pass
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                return int(entry.name)
        except (OSError, IndexError):
            continue
    return None


def _proportional_bytes(pid: int) -> int:
    """The process's proportional set size (a page shared by n processes counts 1/n)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _resident_bytes(pid)


def _resident_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class WorkerSession:
    """Requests to one submission, with a fresh worker whenever the last one was lost.

    Handles are only valid in the worker that made them; `generation` counts
    workers so that a handle that outlived its worker is reported as such.
    """

    def __init__(self, submission_dir: Path, options: WorkerOptions | None = None,
                 default_timeout: float = 10.0):
        self.submission_dir = Path(submission_dir)
        self.options = options or WorkerOptions()
        self.default_timeout = default_timeout
        self.work_root = scratch.mkdtemp("llmgrade-")
        os.chmod(self.work_root, 0o711)   # workers (other uids) reach their own folder, list nothing
        self.worker: WorkerProcess | None = None
        self.generation = 0
        self.pids: list[int] = []   # every worker it started (see template.sweep)
        self.output = ""
        self.busy = False   # in a request: never closed to make room for another session

    def request(self, message: dict, timeout: float | None = None, *,
                encode_handle=None, decode_handle=None) -> Any:
        self.busy = True
        try:
            return self._request(message, timeout, encode_handle, decode_handle)
        finally:
            self.busy = False

    def _request(self, message: dict, timeout: float | None, encode_handle, decode_handle) -> Any:
        worker = self.ensure_worker()
        frame = codec.encode(message, to_handle=encode_handle, with_grad=True,
                             max_bytes=self.options.max_bytes)
        try:
            reply = worker.request(frame, timeout or self.default_timeout)
        except WorkerFailure:
            self._collect_output(worker)
            self.discard()
            raise
        self._collect_output(worker)
        try:
            response = codec.decode(reply, from_handle=decode_handle, max_bytes=self.options.max_bytes)
            return self._unpack(response, message)
        except codec.CodecError as exc:
            self.discard()
            raise WorkerFailure(f"sent back a malformed reply ({exc})") from None
        except StudentException as exc:
            if poisons_the_process(exc):
                self.discard()   # a CUDA error is sticky: the next test gets a fresh worker
            raise

    def ensure_worker(self) -> WorkerProcess:
        """The live worker, started (and `generation` advanced) if there is none."""
        if self.worker is None:
            live.make_room(self)
            self.worker = WorkerProcess(self.submission_dir, self.options, self.work_root)
            self.pids.append(self.worker.pid)
            self.generation += 1
        live.touch(self)
        return self.worker

    def _unpack(self, response: Any, message: dict) -> Any:
        if not (isinstance(response, dict) and type(response.get("ok")) is bool):
            raise codec.CodecError("reply is not a response")
        if not response["ok"]:
            error = response.get("error")
            fields = ("type", "mro", "message", "traceback")
            if not (isinstance(error, dict) and all(isinstance(error.get(f), (str, list)) for f in fields)):
                raise codec.CodecError("bad error description")
            mro = [str(name) for name in error["mro"]] if isinstance(error["mro"], list) else []
            raise StudentException(str(error["type"]), mro, str(error["message"]), str(error["traceback"]))
        states = response.get("generators")
        sent = collect(message, torch.Generator)
        if not (isinstance(states, list) and len(states) == len(sent)):
            raise codec.CodecError("generator states do not match the request")
        for gen, state in zip(sent, states):
            if not (isinstance(state, torch.Tensor) and state.dtype == torch.uint8):
                raise codec.CodecError("bad generator state")
            try:
                gen.set_state(state)
            except RuntimeError as exc:
                raise codec.CodecError(f"bad generator state: {exc}") from None
        return response.get("value")

    def _collect_output(self, worker: WorkerProcess) -> None:
        self.output = (self.output + worker.new_output())[-OUTPUT_KEEP:]

    def take_output(self) -> str:
        """What the submission printed since the last take_output()."""
        output, self.output = self.output, ""
        return output

    def discard(self) -> None:
        live.forget(self)
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def close(self) -> None:
        self.discard()
        shutil.rmtree(self.work_root, ignore_errors=True)


_STICKY_ERRORS = ("device-side assert", "CUDA error", "cuDNN error", "CUBLAS_STATUS", "illegal memory access")


def poisons_the_process(exc: StudentException) -> bool:
    """Whether the worker is unusable after this exception (CUDA errors stay raised in the process)."""
    return exc.is_a("RuntimeError") and any(marker in exc.message for marker in _STICKY_ERRORS)


def collect(value: Any, kind: type) -> list:
    """Instances of `kind` in `value`, depth first; the worker walks in the same order."""
    if isinstance(value, kind):
        return [value]
    if isinstance(value, dict):
        value = [item for pair in value.items() for item in pair]
    if isinstance(value, (list, tuple)):
        return [found for item in value for found in collect(item, kind)]
    return []


def with_options(options: WorkerOptions, **changes) -> WorkerOptions:
    return replace(options, **changes)
