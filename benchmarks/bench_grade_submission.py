"""How long grading a whole submission takes: every stage but the training run.

    python benchmarks/bench_grade_submission.py            # the reference solutions
    python benchmarks/bench_grade_submission.py SUBMISSION

Prints the wall time of `llmgrade grade SUBMISSION` as a fresh command (Python
start, torch import, template start, every stage's hidden suite, results.json),
then each stage's share, graded again in this process after one warm-up grading
(the template started, the suites imported: what a batch's grading process pays).
Targets: the stages tokenizer to sampling in under 60 s (issue 4), under 6 s, and the
tokenizer stage under 1 s warm (issue 13), on this 2-core machine.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grader.course.stages import discover, project_root
from grader.engine.grade import GradeOptions, grade
from grader.engine.results_json import stage_scores

EXCLUDED = {"training"}   # its budgeted training run has its own benchmark and target


def main() -> None:
    submission = Path(sys.argv[1]) if len(sys.argv) > 1 else project_root() / "solutions"
    names = [s.name for s in discover() if s.name not in EXCLUDED]
    stage_args = [arg for name in names for arg in ("--stage", name)]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "grader", "grade", str(submission), *stage_args,
                        "--device", "cpu", "--out", f"{tmp}/results.json"], check=True, capture_output=True)
        cold = time.perf_counter() - start
    print(f"{submission}: stages {', '.join(names)} on CPU")
    print(f"  cold command, all {len(names)} stages: {cold:6.1f} s   (target < 6 s)")
    total_tests = 0
    grade(submission, GradeOptions(stage_names=names, device="cpu"))   # warm: template, imports, first uses
    for name in names:
        start = time.perf_counter()
        results = grade(submission, GradeOptions(stage_names=[name], device="cpu"))
        seconds = time.perf_counter() - start
        score, maximum = stage_scores(results)[name]
        total_tests += len(results["tests"])
        print(f"  {name:<14} {len(results['tests']):3d} tests  {score:g}/{maximum:g}  {seconds:6.1f} s")
    print(f"  {total_tests} tests in all")


if __name__ == "__main__":
    main()
