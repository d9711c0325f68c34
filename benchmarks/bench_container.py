"""Grading inside a Gradescope-sized container: peak memory and wall time under a cgroup.

    python benchmarks/bench_container.py                          # 768M, 0.5 vCPU, every stage
    python benchmarks/bench_container.py --memory 768M --cpus 0.5 --stage training
    python benchmarks/bench_container.py --per-stage              # and each stage in a run of its own

Gradescope's default autograder container has 768 MB of memory, 0.5 vCPU and a 10-minute
limit. This runs `python -m grader grade SUBMISSION --out results.json --device cpu` (the
reference by default) as a fresh command inside a cgroup v1 child made here (root only):
`memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`, so no swap past it) and
`cpu.cfs_quota_us / cpu.cfs_period_us` = the vCPUs. Every process of the grading is in it
(grading process, template, workers), as in the container. Docker's cgroups are read-only
and it has no CAP_SYS_ADMIN, so the grading runs at Gradescope's isolation level
(LLMGRADE_ISOLATION_OFF=namespaces,cgroups: own uid, seccomp, rlimits): with the cgroup layer
on, workers would move into cgroups of their own, outside this one.

Reported per run: wall time, the exit status (137: the kernel's OOM killer), the cgroup's
`memory.max_usage_in_bytes` (everything charged, the page cache of files read included:
what Docker and Gradescope show), the peak of anonymous + shmem memory sampled every 0.1 s
from memory.stat (what cannot be reclaimed, so what decides an OOM kill), OOM kills, and
whether results.json gives full marks. The cgroup is removed at the end.
The machine may be shared: times are wall times, under the quota, and vary with its load.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from grader.course.stages import discover, project_root
from grader.worker import cgroups
from grader.worker.layers import OFF_VARIABLE

CGROUP = Path("/sys/fs/cgroup")
GRADESCOPE_LEVEL = "namespaces,cgroups"   # what Docker's default profile takes away
PERIOD_US = 100_000


def parse_size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    text = text.strip().upper().rstrip("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


@dataclass
class Run:
    label: str
    seconds: float
    code: int
    max_usage: int        # memory.max_usage_in_bytes
    peak_anon: int        # sampled peak of rss + shmem (what cannot be reclaimed)
    oom_kills: int
    score: float | None
    max_score: float | None
    tests: int
    results: dict | None = None   # results.json, when it was written

    @property
    def full_marks(self) -> bool:
        return self.score is not None and self.max_score is not None and abs(self.score - self.max_score) < 1e-6


class Container:
    """A memory + cpu cgroup v1 pair made for one run, removed by `remove`."""

    def __init__(self, name: str, memory: int, cpus: float):
        self.memory = CGROUP / "memory" / name
        self.cpu = CGROUP / "cpu" / name
        for folder in (self.memory, self.cpu):
            folder.mkdir()
        (self.memory / "memory.limit_in_bytes").write_text(str(memory))
        if (self.memory / "memory.memsw.limit_in_bytes").exists():   # no swapping past the limit
            (self.memory / "memory.memsw.limit_in_bytes").write_text(str(memory))
        (self.cpu / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (self.cpu / "cpu.cfs_quota_us").write_text(str(int(cpus * PERIOD_US)))

    def join(self) -> None:
        """Move the calling process in (the child, between fork and exec)."""
        for folder in (self.memory, self.cpu):
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    def stat(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in (line.split() for line in
                                           (self.memory / "memory.stat").read_text().splitlines())}
        except (OSError, ValueError):
            return {}

    def read(self, name: str) -> int:
        return int((self.memory / name).read_text().split()[0])

    def oom_kills(self) -> int:
        for line in (self.memory / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def procs(self) -> list[int]:
        return [int(p) for p in (self.memory / "cgroup.procs").read_text().split()]

    def remove(self) -> None:
        deadline = time.monotonic() + 5
        while self.procs() and time.monotonic() < deadline:   # strays of a killed run
            for pid in self.procs():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.1)
        for top in (self.memory, self.cpu):   # the grading's worker groups nest inside
            cgroups.remove_tree(top)
            if top.is_dir():
                print(f"  could not remove {top}", file=sys.stderr)


def grade_in_container(label: str, submission: Path, stage_names: list[str], memory: int, cpus: float,
                       isolation_off: str, timeout: float) -> Run:
    container = Container(f"llmgrade-bench-{os.getpid()}-{label}", memory, cpus)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            stat = container.stat()
            peak[0] = max(peak[0], stat.get("total_rss", 0) + stat.get("total_shmem", 0))

    env = dict(os.environ)
    env.pop(OFF_VARIABLE, None)
    if isolation_off:
        env[OFF_VARIABLE] = isolation_off
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "results.json"
            stage_args = [arg for name in stage_names for arg in ("--stage", name)]
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            start = time.perf_counter()
            process = subprocess.Popen(
                [sys.executable, "-m", "grader", "grade", str(submission), *stage_args,
                 "--out", str(out), "--device", "cpu"],
                env=env, preexec_fn=container.join, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                log, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                log, _ = process.communicate()
            seconds = time.perf_counter() - start
            done.set()
            sampler.join()
            score = max_score = results = None
            tests = 0
            if out.exists():
                results = json.loads(out.read_text())
                score, tests = results.get("score"), len(results.get("tests", []))
                max_score = sum(t.get("max_score", 0) for t in results.get("tests", []))
            if process.returncode:
                print(f"  [{label}] exit {process.returncode}; last lines:\n    " +
                      "\n    ".join(log.decode(errors="replace").strip().splitlines()[-8:]))
            return Run(label, seconds, process.returncode, container.read("memory.max_usage_in_bytes"),
                       peak[0], container.oom_kills(), score, max_score, tests, results)
    finally:
        done.set()
        container.remove()


def report(runs: list[Run], memory: int, cpus: float) -> None:
    mb = 2**20
    print(f"\nlimit {memory / mb:.0f} MiB, {cpus:g} vCPU; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine: wall times vary)")
    print(f"{'run':<16} {'wall s':>7} {'exit':>5} {'max usage MiB':>14} {'peak anon MiB':>14} "
          f"{'OOM kills':>9} {'tests':>6}  score")
    for r in runs:
        score = "no results" if r.score is None else f"{r.score:g}/{r.max_score:g}" + (
            "  full marks" if r.full_marks else "  NOT FULL MARKS")
        print(f"{r.label:<16} {r.seconds:7.1f} {r.code:5d} {r.max_usage / mb:14.0f} {r.peak_anon / mb:14.0f} "
              f"{r.oom_kills:9d} {r.tests:6d}  {score}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("submission", nargs="?", type=Path, default=project_root() / "solutions")
    parser.add_argument("--memory", default="768M", help="the container's memory (default 768M)")
    parser.add_argument("--cpus", type=float, default=0.5, help="the container's vCPUs (default 0.5)")
    parser.add_argument("--stage", action="append", dest="stages", help="grade only this stage (repeatable)")
    parser.add_argument("--per-stage", action="store_true", help="also grade each stage in a run of its own")
    parser.add_argument("--isolation-off", default=GRADESCOPE_LEVEL,
                        help=f"layers switched off ({OFF_VARIABLE}); default: Gradescope's level")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run (Gradescope: 600)")
    args = parser.parse_args()
    if os.geteuid() != 0 or not (CGROUP / "memory").is_dir() or not (CGROUP / "cpu").is_dir():
        sys.exit("needs root and cgroup v1 memory and cpu controllers under /sys/fs/cgroup")
    memory, names = parse_size(args.memory), args.stages or [s.name for s in discover()]
    runs = [grade_in_container("all" if not args.stages else "+".join(names), args.submission, names,
                               memory, args.cpus, args.isolation_off, args.timeout)]
    report(runs, memory, args.cpus)
    if args.per_stage:
        for name in names:
            runs.append(grade_in_container(name, args.submission, [name], memory, args.cpus,
                                           args.isolation_off, args.timeout))
            report(runs[-1:], memory, args.cpus)
        report(runs, memory, args.cpus)
    sys.exit(0 if all(r.code == 0 and r.full_marks for r in runs) else 1)


if __name__ == "__main__":
    main()
