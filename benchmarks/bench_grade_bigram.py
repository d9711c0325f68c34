"""How long grading the bigram stage takes, and what the worker costs.

    python benchmarks/bench_grade_bigram.py

Prints:
- cold: `llmgrade grade solutions --stage bigram` as a fresh command (Python start,
  torch import, template start, grading, results.json): what one Gradescope run costs;
- warm: the same grading again inside one process (what grade-all pays per submission);
- in-process: the same hidden checks with the submission imported in this process
  (no worker; trusted code only), so warm - in-process is the worker's overhead.
Target (issue 2): under 10 s wall for the stage on a 2-core machine.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grader.course.stages import project_root
from grader.engine.grade import GradeOptions, grade

REPEATS = 3


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    solutions = project_root() / "solutions"
    with tempfile.TemporaryDirectory() as tmp:
        cold = timed(lambda: subprocess.run(
            [sys.executable, "-m", "grader", "grade", str(solutions), "--stage", "bigram",
             "--device", "cpu", "--out", f"{tmp}/results.json"], check=True, capture_output=True))
    worker = GradeOptions(stage_names=["bigram"], device="cpu")
    local = GradeOptions(stage_names=["bigram"], device="cpu", in_process=True)
    for options in (worker, local):  # warm-up: imports, template, caches
        results = grade(solutions, options)
        assert results["score"] == sum(t["max_score"] for t in results["tests"]), "reference lost points"
    warm = statistics.median(timed(lambda: grade(solutions, worker)) for _ in range(REPEATS))
    inproc = statistics.median(timed(lambda: grade(solutions, local)) for _ in range(REPEATS))
    tests = len(results["tests"])
    print(f"bigram stage, {tests} tests, reference submission, CPU")
    print(f"  cold command (fresh process):   {cold:6.2f} s   (target < 10 s)")
    print(f"  warm, sandboxed worker:         {warm:6.2f} s   (median of {REPEATS})")
    print(f"  warm, in-process (no worker):   {inproc:6.2f} s   (median of {REPEATS})")
    print(f"  worker overhead:                {warm - inproc:6.2f} s   "
          f"({(warm - inproc) / tests * 1000:.0f} ms per test)")


if __name__ == "__main__":
    main()
