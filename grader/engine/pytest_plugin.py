"""The pytest plugin that turns hidden (or public) test suites into grades.

A test module is plain pytest; what this plugin adds:

- fixtures: `student` (the submission, served by a worker that traps the
  stage's `BANNED_APIS`; see remote.py and worker/traps.py), `submission_dir`,
  `reference` (the stage's reference solution, imported here), `device`
  ("cpu", and "cuda" when available: every test using it runs on each),
  `credit` (partial credit: `credit.fraction = 0.5`), `leaderboard`;
- markers: `@pytest.mark.points(2)` (default 1; split evenly over devices),
  `@pytest.mark.visibility("after_published")`, `@pytest.mark.stage("bigram")`
  (default: the test file's folder name);
- results: one `TestRecord` per test, named "<stage>: <first docstring line>".

Standalone: `pytest autograder_tests/bigram -p grader.engine.pytest_plugin --submission DIR`.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from grader import scratch

from grader.course import stages
from grader.engine.banned import stage_banned_apis
from grader.engine.checks import CheckFailure
from grader.engine.remote import LocalSubmission, RemoteSubmission, StudentCodeError, SubmissionProblem
from grader.engine.submissions import Submission
from grader.worker.client import WorkerFailure, WorkerOptions, WorkerSession

MAX_FEEDBACK = 4000
MAX_PRINTED = 2000


@dataclass
class TestRecord:
    stage: str
    name: str
    max_score: float
    visibility: str = "visible"
    passed: bool = True
    fraction: float = 1.0
    feedback: list[str] = field(default_factory=list)
    printed: str = ""
    internal_error: bool = False
    ran: bool = False
    function: str = ""     # the test function's name: what corpus PART: lines match

    @property
    def score(self) -> float:
        return self.max_score * self.fraction if self.passed else 0.0


@dataclass
class Credit:
    """Set `fraction` (0..1) in a test for partial credit; `message` explains it."""

    fraction: float = 1.0
    message: str = ""


def available_devices(choice: str = "auto") -> list[str]:
    cuda = torch.cuda.is_available()
    if choice == "cuda" and not cuda:
        raise ValueError("--device cuda: CUDA is not available on this machine")
    return {"cpu": ["cpu"], "cuda": ["cuda"]}.get(choice, ["cpu", "cuda"] if cuda else ["cpu"])


def feedback_for(excinfo: pytest.ExceptionInfo) -> tuple[str, bool]:
    """The student-facing message for a failed test, and whether it is the grader's fault."""
    exc = excinfo.value
    if isinstance(exc, (CheckFailure, StudentCodeError, SubmissionProblem)):
        return str(exc), False
    if isinstance(exc, pytest.fail.Exception):
        message = str(exc)
        if message.startswith("Timeout"):
            return "this test took longer than its time limit and was stopped", False
        return message, False
    if isinstance(exc, AssertionError):
        text = str(exc).splitlines()[0] if str(exc) else str(excinfo.traceback[-1].statement).strip()
        return f"check failed: {text}", False
    sys.stderr.write("".join(traceback.format_exception(exc)))
    return f"the grader could not check this result ({type(exc).__name__}: {str(exc)[:300]})", True


class GradingSession:
    """One grading run of one submission: fixtures, hooks, and the records they produce."""

    def __init__(self, submission: Submission | None, *, devices: list[str],
                 worker_options: WorkerOptions | None = None, call_timeout: float = 10.0,
                 in_process: bool = False, stop_when: Callable[[TestRecord], bool] | None = None,
                 deadline: float | None = None):
        self.submission = submission
        self.deadline = deadline        # time.monotonic() after which no test starts (a run's time budget)
        self.not_started: set[str] = set()   # tests the time budget kept from starting
        self.stop_when = stop_when      # stop the run once a finished test's record satisfies it
        self.stopped_early = False
        self.devices = devices
        self.worker_options = worker_options or WorkerOptions()
        self.call_timeout = call_timeout
        self.in_process = in_process
        self.records: dict[str, TestRecord] = {}
        self.leaderboard_entries: list[dict] = []
        self.collection_errors: list[str] = []
        self._remotes: dict[str, Any] = {}
        self._import_failures: dict = {}
        self.worker_sessions: list[WorkerSession] = []
        self._uses: dict[str, list[str]] | None = None   # stage -> the other stages its module imports

    # -- which stage, how many points, what name

    @staticmethod
    def stage_of(item: pytest.Item) -> str:
        marker = item.get_closest_marker("stage")
        return marker.args[0] if marker else Path(str(item.fspath)).parent.name

    def _name(self, item: pytest.Item) -> str:
        doc = (getattr(item, "function", None).__doc__ or item.name).strip().splitlines()[0]
        params = dict(getattr(getattr(item, "callspec", None), "params", {}))
        device = params.pop("device", None)
        if params:
            try:
                formatted = doc.format(**params)
            except (KeyError, IndexError, ValueError):
                formatted = doc
            if formatted == doc:
                ids = item.callspec.id.split("-")
                formatted = f"{doc} [{'-'.join(i for i in ids if i not in self.devices)}]"
            doc = formatted
        if device is not None and len(self.devices) > 1:
            doc += f" [{device}]"
        return f"{self.stage_of(item)}: {doc}"

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "device" in metafunc.fixturenames:
            metafunc.parametrize("device", self.devices, ids=self.devices)

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            marker = item.get_closest_marker("points")
            points = float(marker.args[0]) if marker else 1.0
            if "device" in getattr(item, "fixturenames", ()):
                points /= len(self.devices)
            visibility = item.get_closest_marker("visibility")
            self.records[item.nodeid] = TestRecord(
                self.stage_of(item), self._name(item), points,
                visibility.args[0] if visibility else "visible",
                function=getattr(getattr(item, "function", None), "__name__", item.name))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collection_errors.append(f"{report.nodeid}: {str(report.longrepr)[-2000:]}")

    # -- outcomes

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Past the run's time budget no test starts: results must be written before the platform's limit."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.not_started.add(item.nodeid)
            item.session.shouldstop = "time budget"
            pytest.skip("the grading run's time budget ran out")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        record = self.records.get(item.nodeid)
        if record is None:
            return report
        record.ran = True
        if report.failed or report.skipped:
            record.passed = False
            if report.skipped:
                record.feedback.append(f"skipped: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else ''}")
            elif call.excinfo is not None:
                message, internal = feedback_for(call.excinfo)
                record.feedback.append(message[:MAX_FEEDBACK])
                record.internal_error |= internal
                if not internal:
                    record.feedback.extend(self._upstream_notes(record.stage))
        if call.when == "call":
            credit = item.funcargs.get("credit") if hasattr(item, "funcargs") else None
            if isinstance(credit, Credit):
                record.fraction = min(1.0, max(0.0, float(credit.fraction)))
                if credit.message:
                    record.feedback.append(credit.message)
            remote = item.funcargs.get("student") if hasattr(item, "funcargs") else None
            if remote is not None and not record.passed:
                record.printed = remote.output()[-MAX_PRINTED:]
        if call.when == "teardown" and self.stop_when is not None and self.stop_when(record):
            self.stopped_early = True
            item.session.shouldstop = "stop_when"
        return report

    def import_problems(self) -> dict[str, str]:
        """{module: why importing it failed} in this grading (the first line of the message)."""
        return {module: message.split("\n(tried once")[0] for (module, _), message in self._import_failures.items()}

    def _upstream_notes(self, stage: str) -> list[str]:
        """"your transformer.py uses your attention.py, which fails 6 attention tests: ..." for each
        stage this stage's module imports (directly or through helpers) that failed tests earlier
        in this grading: the student then fixes the cause, not a correct later module."""
        if self.submission is None:
            return []
        if self._uses is None:
            self._uses = uses_stages(Path(self.submission.root), [s.name for s in stages.discover()])
        notes = []
        for used in self._uses.get(stage, []):
            failed = [r for r in self.records.values() if r.stage == used and r.ran and not r.passed]
            if failed:
                notes.append(f"note: your {stage}.py uses your {used}.py, which fails {len(failed)} {used} "
                             f"test{'s' if len(failed) > 1 else ''} (e.g. \"{failed[0].name}\"): fix those first")
        return notes

    def finished_records(self) -> list[TestRecord]:
        """Every record; a test that never ran is dropped after a deliberate early stop, else failed."""
        records = []
        for nodeid, record in self.records.items():
            if self.not_started and (not record.ran or nodeid in self.not_started):
                record.passed, record.feedback = False, [
                    "not graded: the grading run's time budget ran out before this test started (the tests "
                    "before it took too long; the slowest are the ones whose feedback mentions a timeout)"]
                records.append(record)
                continue
            if not record.ran:
                if self.stopped_early:
                    continue
                record.passed, record.internal_error = False, True
                record.feedback.append("this test did not run (the grading run was interrupted)")
            records.append(record)
        return records

    def pytest_sessionfinish(self) -> None:
        for session in self.worker_sessions:
            try:
                session.close()
            except WorkerFailure as exc:   # processes that outlived SIGKILL: say so, never hide it
                self.collection_errors.append(f"cleaning up a worker: {exc}")

    # -- fixtures

    @pytest.fixture
    def student(self, request: pytest.FixtureRequest):
        stage = self.stage_of(request.node)
        if self.submission is None:
            raise pytest.UsageError("no submission: pass --submission DIR")
        if stage not in self._remotes:
            if self.in_process:
                self._remotes[stage] = LocalSubmission(self.submission.root)
            else:
                options = replace(self.worker_options, stage=stage)
                session = WorkerSession(self.submission.root, options, self.call_timeout)
                self.worker_sessions.append(session)
                self._remotes[stage] = RemoteSubmission(session, self.submission.problems,
                                                        banned_apis=stage_banned_apis(stage),
                                                        import_failures=self._import_failures)
        remote = self._remotes[stage]
        remote.output()  # start this test's printed output afresh
        marker = request.node.get_closest_marker("call_timeout")
        if marker:
            with remote.timeout(marker.args[0]):
                yield remote
        else:
            yield remote

    @pytest.fixture
    def submission_dir(self) -> Path:
        """The submission's folder, for checks that read its source as text (never import it)."""
        if self.submission is None:
            raise pytest.UsageError("no submission: pass --submission DIR")
        return Path(self.submission.root)

    @pytest.fixture
    def reference(self, request: pytest.FixtureRequest):
        return load_reference(self.stage_of(request.node))

    @pytest.fixture
    def credit(self) -> Credit:
        return Credit()

    @pytest.fixture
    def leaderboard(self) -> list[dict]:
        return self.leaderboard_entries


def uses_stages(root: Path, stage_names: list[str]) -> dict[str, list[str]]:
    """{stage: the other stages whose modules its module imports, directly or through helper
    modules of the submission}, read from the sources with `ast` (nothing is imported here)."""
    import ast

    from grader.engine.banned import imported_modules

    files = sorted(root.glob("*.py"))
    own = {path.stem for path in files}
    imports: dict[str, set[str]] = {}
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError, OSError):
            continue
        found = {name.split(".")[0] for name in imported_modules(tree)}
        imports[path.stem] = found & own
    uses = {}
    for stage in stage_names:
        seen, todo = set(), [stage]
        while todo:
            for name in imports.get(todo.pop(), ()):
                if name not in seen and name != stage:
                    seen.add(name)
                    todo.append(name)
        uses[stage] = [s for s in stage_names if s in seen]
    return uses


def load_reference(stage: str):
    """The reference solution module of `stage` (solutions/<stage>.py), imported in the grading process.

    Only from solutions/: a same-named module elsewhere on sys.path (a student's working copy,
    where `llmgrade check` runs) must never be imported here.
    """
    solutions = stages.project_root() / "solutions"
    path = solutions / f"{stage}.py"
    if not path.is_file():
        raise pytest.UsageError(f"no reference solution {path} (solutions/ is not part of the student bundle)")
    if str(solutions) not in sys.path:
        sys.path.insert(0, str(solutions))
    module = importlib.import_module(stage)
    if Path(getattr(module, "__file__", "") or "").resolve() != path.resolve():
        raise pytest.UsageError(f"module {stage!r} was imported from {module.__file__}, not from {path}")
    return module


# -- standalone use: pytest -p grader.engine.pytest_plugin --submission DIR

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llmgrade")
    group.addoption("--submission", help="grade this submission folder (standalone use)")
    group.addoption("--llmgrade-device", default="auto", choices=["auto", "cpu", "cuda"])


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in [("points(n)", "points for this test (default 1)"),
                            ("visibility(v)", "Gradescope visibility of this test"),
                            ("stage(name)", "the stage this test belongs to"),
                            ("call_timeout(seconds)", "time limit of each call into the submission")]:
        config.addinivalue_line("markers", f"{name}: {help_text}")
    if any(isinstance(p, GradingSession) for p in config.pluginmanager.get_plugins()):
        return
    path = config.getoption("--submission")
    if path:
        from grader.engine import submissions

        modules = [s.name for s in stages.discover()]
        loaded = submissions.load(Path(path), modules, _tempdir())
        config.pluginmanager.register(GradingSession(
            loaded, devices=available_devices(config.getoption("--llmgrade-device"))), "llmgrade-session")


def _tempdir() -> Path:
    return scratch.mkdtemp("llmgrade-submission-") / "submission"
