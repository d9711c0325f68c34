"""Throughput of `llmgrade grade-all`: submissions per minute with 1 and 2 workers.

    python benchmarks/bench_grade_all.py                     # 40 submissions, every stage but training
    python benchmarks/bench_grade_all.py --count 8 --stage bigram --workers 1 2

Builds COUNT submissions in a temporary folder: copies of solutions/ (every stage
module), where all but every fifth have one stage's module replaced by a buggy corpus
entry (tests/corpus/<stage>/buggy/, cycling through stages and entries). Then runs
`python -m grader grade-all` as a fresh command for each worker count (fresh output
folder, so nothing is skipped) and prints wall time, submissions per minute and the
speed-up over one worker, with the load average (the machine may be shared).
Target (issue 6): at least 10 submissions per minute for the stages other than training.

`--isolation both` runs each worker count twice, with the isolation layers this machine
gives and with the kernel layers switched off (LLMGRADE_ISOLATION_OFF: the audit hook and
rlimits only, as before issue 9), to show what isolation costs (target: at most 15 %).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grader.course import corpus
from grader.course.stages import discover, project_root
from grader.worker.layers import OFF_VARIABLE

EXCLUDED = {"training"}   # its budgeted training run has its own benchmark


def build(folder: Path, count: int, stage_names: list[str]) -> None:
    root = project_root()
    buggy = {name: [e for e in corpus.entries(root / "tests/corpus", [name]) if e.kind == "buggy"]
             for name in stage_names}
    entries = itertools.cycle([(name, path) for group in itertools.zip_longest(*buggy.values())
                               for name, path in zip(buggy, group) if path is not None])
    modules = [s.module for s in discover()]
    for i in range(count):
        sub = folder / f"s{i:03d}"
        sub.mkdir(parents=True)
        for module in modules:
            if (root / "solutions" / module).exists():
                shutil.copy(root / "solutions" / module, sub / module)
        for extra in (root / "solutions").glob("*.py"):   # helpers a solution may import
            if not (sub / extra.name).exists():
                shutil.copy(extra, sub / extra.name)
        if i % 5:
            name, entry = next(entries)
            corpus.materialise(entry, sub)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--stage", action="append", dest="stages")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--isolation", choices=["on", "off", "both"], default="on")
    args = parser.parse_args()
    stage_names = args.stages or [s.name for s in discover() if s.name not in EXCLUDED]
    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "subs"
        build(subs, args.count, stage_names)
        print(f"{args.count} submissions, stages {', '.join(stage_names)}, CPU; "
              f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        base = None
        modes = {"on": [True], "off": [False], "both": [False, True]}[args.isolation]
        for workers in args.workers:
            for isolated in modes:
                out = Path(tmp) / f"out{workers}-{isolated}"
                env = dict(os.environ)
                env.pop(OFF_VARIABLE, None)
                if not isolated:
                    env[OFF_VARIABLE] = "uid,namespaces,seccomp,cgroups"
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "grader", "grade-all", str(subs), "--out", str(out),
                                      "--workers", str(workers), "--device", "cpu",
                                      *[a for n in stage_names for a in ("--stage", n)]],
                                     check=True, capture_output=True, env=env)
                seconds = time.perf_counter() - start
                rate = args.count / seconds * 60
                base = base or rate
                first = out / sorted(p.name for p in out.iterdir() if p.is_dir())[0] / "results.json"
                level = (json.loads(first.read_text()).get("extra_data") or {}).get("llmgrade_isolation", "?")
                print(f"  {workers} worker(s), isolation {level:9s}: {seconds:7.1f} s  {rate:6.1f} "
                      f"submissions/min  x{rate / base:.2f}  (load average after: {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
