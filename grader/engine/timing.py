"""How long submission code takes, measured by the grader (never reported by the worker).

    seconds = run_time(student.attention.scaled_dot_product_attention, q, k, v, device=device)
    baseline = run_time(reference.scaled_dot_product_attention, q, k, v, device=device)

On the CPU, `run_time` is single-threaded CPU time: the kernel's count of the
nanoseconds the worker's threads ran (/proc/<pid>/task/*/schedstat), so other
load on the machine (a busy CI runner, other graders) does not change it. On
CUDA it is wall time around a synchronised batch of calls. Either way the
worker runs the calls back to back and the grader subtracts a request that
carries the same arguments but makes no call, so transfer costs cancel and
code in the worker cannot misreport its own speed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from grader.engine.remote import RemoteObject, _LocalProxy


def run_time(fn: Any, *args, device: str | torch.device = "cpu", repeat: int = 5, warmup: int = 2,
             **kwargs) -> float:
    """Seconds per call of `fn(*args, **kwargs)`: CPU time on one thread for "cpu", wall time for "cuda"."""
    if torch.device(device).type == "cuda":
        return wall_time(fn, *args, repeat=repeat, warmup=warmup, **kwargs)
    return cpu_time(fn, *args, repeat=repeat, warmup=warmup, **kwargs)


def wall_time(fn: Any, *args, repeat: int = 5, warmup: int = 2, **kwargs) -> float:
    """Seconds per call on the grader's wall clock (CUDA work synchronised)."""
    return _measure(fn, args, kwargs, repeat, warmup, threads=None,
                    local_clock=time.perf_counter, remote_clock=lambda pid: time.perf_counter())


def cpu_time(fn: Any, *args, repeat: int = 5, warmup: int = 2, **kwargs) -> float:
    """CPU seconds per call with torch on one thread, immune to other processes' load."""
    return _measure(fn, args, kwargs, repeat, warmup, threads=1,
                    local_clock=time.thread_time, remote_clock=_process_cpu_seconds)


def _measure(fn: Any, args: tuple, kwargs: dict, repeat: int, warmup: int, threads: int | None,
             local_clock: Callable[[], float], remote_clock: Callable[[int], float]) -> float:
    if not isinstance(fn, RemoteObject):
        target = fn._target if isinstance(fn, _LocalProxy) else fn
        previous = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            for _ in range(warmup):
                target(*args, **kwargs)
            _synchronize()
            start = local_clock()
            for _ in range(repeat):
                target(*args, **kwargs)
            _synchronize()
            return (local_clock() - start) / repeat
        finally:
            torch.set_num_threads(previous)

    remote = fn._remote

    def batch(times: int) -> float:
        message = {"op": "repeat", "target": fn, "args": list(args), "kwargs": kwargs,
                   "times": times, "threads": threads}
        pid = remote._session.ensure_worker().code_pid
        start = remote_clock(pid)
        remote.request(message, f"{fn._label}(...)")
        return remote_clock(pid) - start

    batch(warmup)
    empty = min(batch(0) for _ in range(3))
    return max(batch(repeat) - empty, 0.0) / repeat


def _process_cpu_seconds(pid: int) -> float:
    """CPU time of every thread of process `pid`, in seconds, from the kernel's scheduler stats."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue   # a thread that ended meanwhile
    return total / 1e9


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
