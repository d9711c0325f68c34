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
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import pytest

from grader import scratch
from grader.course import stages
from grader.engine import results_json, submissions
from grader.engine.pytest_plugin import GradingSession, TestRecord, available_devices
from grader.errors import UsageProblem
from grader.worker import forks, identity, layers, namespaces
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
    debug: bool = False                                     # check --debug: in-process, pytest's output and pdb
    stop_when: Callable[[TestRecord], bool] | None = None   # stop early (the corpus: once a bug is caught)
    time_budget: float | None = None                        # seconds for the whole grading (Gradescope's limit)
    isolation: str = "auto"                                 # auto | strict (grader/worker/layers.py)
    protect_paths: list[str] = field(default_factory=list)  # folders of ours workers must not read (grade-all)
    only_tests: list[str] = field(default_factory=list)     # node ids in a stage's suite folder
                                                            # ("test_bigram.py::test_nll_hand"); empty: all


def grade(path: Path, options: GradeOptions | None = None) -> dict:
    """Grade the submission at `path`; returns a validated Gradescope results dict."""
    options = options or GradeOptions()
    if options.tests == "hidden" and not (stages.project_root() / "autograder_tests").is_dir():
        raise UsageProblem("hidden tests are not part of the student bundle; "
                           "`llmgrade check` runs the public tests")
    started = time.monotonic()
    layers.protect_grading_process()
    iso = layers.isolation(options.isolation)
    if not (options.in_process or options.debug):
        forks.start_early(options.stage_names)   # if the command has not: its imports run meanwhile
    protected = _protect(iso, options.protect_paths) if not options.in_process else []
    chosen = stages.select(options.stage_names)
    all_modules = [s.name for s in stages.discover()]
    work = scratch.mkdtemp("llmgrade-grade-")
    try:
        loaded = submissions.load(Path(path), all_modules, work / "submission")
        session = GradingSession(
            loaded, devices=available_devices(options.device), call_timeout=options.call_timeout,
            in_process=options.in_process or options.debug, stop_when=options.stop_when,
            deadline=started + options.time_budget if options.time_budget else None,
            worker_options=WorkerOptions(
                hidden_paths=[str(stages.project_root()), *options.hidden_paths],
                memory_limit=options.memory_limit, isolation=options.isolation))
        suites = [_suite(stage, options.tests) for stage in chosen]
        paths = [str(s) for s in suites if s.exists()]
        if options.only_tests:   # only the named tests, in the suites that hold them
            paths = [f"{p}/{t}" for p in paths for t in options.only_tests if (Path(p) / t.split("::")[0]).exists()]
        _run_pytest(paths, session, options.test_timeout, options.debug)
        _confirm_nothing_left(session)
        records = session.finished_records()
        for stage, suite in zip(chosen, suites):
            if not suite.exists() or not any(r.stage == stage.name for r in records):
                records.append(_no_tests(stage, suite))
        summary = _summary(loaded, session, iso if not options.in_process else None, protected)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results_json.build(records, stage_order={s.name: s.order for s in chosen},
                            execution_time=time.monotonic() - started, output=summary,
                            leaderboard=session.leaderboard_entries,
                            extra_data=_extra_data(loaded, session, chosen, None if options.in_process else iso))


def _extra_data(loaded: submissions.Submission, session: GradingSession, chosen: list[stages.Stage],
                iso: layers.Isolation | None) -> dict:
    """What the gradebook reads back as data: why a graded stage's module could not be used at all
    (missing, unreadable, or its import failed), the notes worth telling, the isolation level."""
    graded = {s.name for s in chosen}
    problems = {m: text for m, text in {**loaded.problems, **session.import_problems()}.items() if m in graded}
    extra = {"llmgrade_problems": problems, "llmgrade_notes": list(loaded.notes)}
    if session.not_started:
        extra["llmgrade_not_started"] = len([r for r in session.records.values() if not r.passed
                                             and r.feedback[:1] and r.feedback[0].startswith("not graded: the")])
    if iso is not None:
        extra["llmgrade_isolation"] = iso.level
    return extra


def _suite(stage: stages.Stage, kind: str) -> Path:
    return stage.hidden_tests if kind == "hidden" else stage.public_tests


class _ReportsWithoutTerminal:
    """Grading reads its records, never pytest's report (grading runs without the terminal
    plugin, and pytest_grading.ini turns off the plugins that serve a terminal): failures are
    formatted as native tracebacks, without parsing the test file's source (90 ms a failing
    test), and pytest-timeout gets a terminal writer into a buffer nobody reads (it asks for the
    terminal reporter's when its backstop fires; without one it failed with "assert
    terminalreporter is not None" instead of stopping the test)."""

    @staticmethod
    def pytest_configure(config: pytest.Config) -> None:
        from _pytest._io import TerminalWriter

        config.option.tbstyle = "native"
        if config.pluginmanager.get_plugin("terminalreporter") is None:
            terminal = type("NoTerminal", (), {"_tw": TerminalWriter(io.StringIO())})()
            config.pluginmanager.register(terminal, "terminalreporter")


def _run_pytest(paths: list[str], session: GradingSession, test_timeout: float, debug: bool = False) -> None:
    """Run the suites at `paths` with the grading plugin. `debug` (check --debug): the student's
    code runs in this process, pytest neither captures nor times out, so breakpoint() stops there."""
    if not paths:
        return
    ini = resources.files("grader.engine").joinpath("pytest_grading.ini")
    args = [*paths, "-c", str(ini), "--rootdir", str(stages.project_root()),
            "-p", "grader.engine.pytest_plugin", "-p", "no:terminal", "--import-mode=importlib",
            f"--timeout={0 if debug else test_timeout:g}",
            # debug: the student's prints; else no assertion rewriting (the suites check with
            # grader.testing, a bare assert still names its line; compiling them cost a cold grading 0.4 s)
            "--capture=no" if debug else "--assert=plain"]
    # A hidden suite's own helper modules (sampling_draws.py next to its tests) are importable
    # by name; --import-mode=importlib would not put the folder on sys.path. Name such helpers
    # after their stage: the suites share one sys.modules.
    folders = [f for f in dict.fromkeys(p if Path(p).is_dir() else str(Path(p.split("::")[0]).parent) for p in paths)
               if f not in sys.path]
    sys.path[:0] = folders
    try:
        # pytest's own report is not the feedback: the records are (debug: the student's prints and pdb).
        with contextlib.redirect_stdout(sys.stdout if debug else io.StringIO()):
            pytest.main(args, plugins=[session] if debug else [session, _ReportsWithoutTerminal()])
    finally:
        for folder in folders:
            sys.path.remove(folder)


def _confirm_nothing_left(session: GradingSession) -> None:
    """Every worker of this submission is gone (the next submission of a batch starts clean)."""
    pids = [pid for worker_session in session.worker_sessions for pid in worker_session.pids]
    template = forks.running()
    if pids and template is not None:
        left = template.sweep(pids)
        if left:
            session.collection_errors.append(f"{left} worker(s) were still running after grading and were killed")


def _no_tests(stage: stages.Stage, suite: Path) -> TestRecord:
    """A zero-point record so that a stage without tests is visible, never silently absent."""
    return TestRecord(stage.name, f"{stage.name}: tests", 0.0, passed=False,
                      feedback=[f"no tests were found in {suite.name} (a course set-up problem)"],
                      internal_error=True)


def _summary(loaded: submissions.Submission, session: GradingSession,
             iso: layers.Isolation | None, protected: list[str]) -> str:
    lines = list(loaded.notes)
    problems = sorted(set(loaded.problems.values()))
    lines += problems
    lines += [f"grader error: {e}" for e in session.collection_errors]
    if session.not_started:
        lines.append("the grading run's time budget ran out: the tests after that point were not graded")
    if iso is not None:   # one line, first word "Graded": a status, not a problem (see gradebook)
        lines.append(f"Graded at {iso.summary()}" + (
            f"; made {len(protected)} course folder(s) unreadable to other users" if protected else "") + ".")
    return "\n".join(lines) if lines else "Graded."


def _protect(iso: layers.Isolation, paths: list[str]) -> list[str]:
    """With a uid of their own but no mount namespace (Docker), workers see the machine's files
    as "other": the course tree (but the grader package and the runtime inside it) and `paths`
    lose their "other" permission bits. With namespaces none of it is visible anyway."""
    if not iso.uid or iso.namespaces:
        return []
    changed = identity.protect_course(stages.project_root(), namespaces.runtime_paths())
    return changed + identity.protect(paths)
