"""Grade one submission: materialise it, run the stage suites under pytest, build results.

    results = grade(Path("submissions/ada.zip"), stage_names=["bigram"])

`tests="hidden"` runs autograder_tests/<stage>/ (instructors, Gradescope);
`tests="public"` runs assignments/tests/test_<stage>.py (students' `check`).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import click
import pytest

from grader import results as gradescope
from grader import stages, submission as submissions
from grader.pytest_plugin import GradingSession, TestRecord, available_devices
from grader.worker.client import WorkerOptions
from grader.worker.sandbox import DEFAULT_MEMORY_LIMIT


@dataclass
class GradeOptions:
    stage_names: list[str] = field(default_factory=list)   # empty: every stage
    device: str = "auto"                                    # auto | cpu | cuda
    tests: str = "hidden"                                   # hidden | public
    call_timeout: float = 10.0                              # seconds per call into the submission
    test_timeout: float = 300.0                             # seconds per test, the backstop
    memory_limit: int | None = DEFAULT_MEMORY_LIMIT
    hidden_paths: list[str] = field(default_factory=list)   # more paths the worker may not touch
    in_process: bool = False                                # benchmarks only: trusted code in-process
    stop_when: Callable[[TestRecord], bool] | None = None   # stop early (the corpus: once a bug is caught)


def grade(path: Path, options: GradeOptions | None = None) -> dict:
    """Grade the submission at `path`; returns a validated Gradescope results dict."""
    options = options or GradeOptions()
    if options.tests == "hidden" and not (stages.project_root() / "autograder_tests").is_dir():
        raise click.ClickException("hidden tests are not part of the student bundle; "
                                   "`llmgrade check` runs the public tests")
    started = time.monotonic()
    chosen = stages.select(options.stage_names)
    all_modules = [s.name for s in stages.discover()]
    scratch = Path(tempfile.mkdtemp(prefix="llmgrade-grade-"))
    try:
        loaded = submissions.load(Path(path), all_modules, scratch / "submission")
        session = GradingSession(
            loaded, devices=available_devices(options.device), call_timeout=options.call_timeout,
            in_process=options.in_process, stop_when=options.stop_when,
            worker_options=WorkerOptions(
                hidden_paths=[str(stages.project_root()), *options.hidden_paths],
                memory_limit=options.memory_limit))
        suites = [_suite(stage, options.tests) for stage in chosen]
        _run_pytest([str(s) for s in suites if s.exists()], session, options.test_timeout)
        records = session.finished_records()
        for stage, suite in zip(chosen, suites):
            if not suite.exists() or not any(r.stage == stage.name for r in records):
                records.append(_no_tests(stage, suite))
        summary = _summary(loaded, session)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return gradescope.build(records, stage_order={s.name: s.order for s in chosen},
                            execution_time=time.monotonic() - started, output=summary,
                            leaderboard=session.leaderboard_entries)


def _suite(stage: stages.Stage, kind: str) -> Path:
    return stage.hidden_tests if kind == "hidden" else stage.public_tests


def _run_pytest(paths: list[str], session: GradingSession, test_timeout: float) -> None:
    if not paths:
        return
    ini = resources.files("grader").joinpath("pytest_grading.ini")
    args = [*paths, "-c", str(ini), "--rootdir", str(stages.project_root()),
            "-p", "grader.pytest_plugin", "-p", "no:terminal", "--import-mode=importlib",
            f"--timeout={test_timeout:g}"]
    # A hidden suite's own helper modules (sampling_draws.py next to its tests) are importable
    # by name; --import-mode=importlib would not put the folder on sys.path. Name such helpers
    # after their stage: the suites share one sys.modules.
    folders = [p for p in dict.fromkeys(paths) if Path(p).is_dir() and p not in sys.path]
    sys.path[:0] = folders
    try:
        # pytest's own report is not the feedback: the records are.
        with contextlib.redirect_stdout(io.StringIO()):
            pytest.main(args, plugins=[session])
    finally:
        for folder in folders:
            sys.path.remove(folder)


def _no_tests(stage: stages.Stage, suite: Path) -> TestRecord:
    """A zero-point record so that a stage without tests is visible, never silently absent."""
    return TestRecord(stage.name, f"{stage.name}: tests", 0.0, passed=False,
                      feedback=[f"no tests were found in {suite.name} (a course set-up problem)"],
                      internal_error=True)


def _summary(loaded: submissions.Submission, session: GradingSession) -> str:
    lines = list(loaded.notes)
    problems = sorted(set(loaded.problems.values()))
    lines += problems
    lines += [f"grader error: {e}" for e in session.collection_errors]
    return "\n".join(lines) if lines else "Graded."
