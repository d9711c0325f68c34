"""Gradescope's results.json, built from test records and checked against its schema."""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:   # the command line reads results without torch (pytest_plugin imports it)
    from grader.engine.pytest_plugin import TestRecord


GRADER_ERROR = "grader-error"   # the tag of a test the grader itself failed to run (never the student's fault)


def schema() -> dict:
    return json.loads(resources.files("grader.engine").joinpath("gradescope_schema.json").read_text())


@functools.cache
def _validator():
    """The schema's validator, checked and built once per process (jsonschema.validate does both
    at every call: 25 ms a grading)."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema())
    cls.check_schema(schema())
    return cls(schema())


def test_output(record: TestRecord) -> str:
    parts = list(record.feedback)
    if record.printed:
        parts.append("Your code printed:\n" + record.printed)
    if not parts:
        return "passed" if record.passed else "failed"
    return "\n\n".join(parts)


def build(records: Iterable[TestRecord], *, stage_order: dict[str, int], execution_time: float,
          output: str, leaderboard: list[dict] | None = None, extra_data: dict | None = None) -> dict:
    tests, counters = [], {}
    for record in records:
        counters[record.stage] = counters.get(record.stage, 0) + 1
        tests.append({
            "name": record.name,
            "number": f"{stage_order.get(record.stage, 0)}.{counters[record.stage]}",
            "score": round(record.score, 4),
            "max_score": round(record.max_score, 4),
            "status": "passed" if record.passed and record.fraction > 0 else "failed",
            "output": test_output(record),
            "output_format": "text",
            "tags": [record.stage] + ([GRADER_ERROR] if record.internal_error else []),
            "visibility": record.visibility,
        })
    results = {
        "score": round(sum(t["score"] for t in tests), 4),
        "execution_time": round(execution_time, 2),
        "output": output,
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
        "leaderboard": leaderboard or [],
    }
    if extra_data:
        results["extra_data"] = extra_data
    validate(results)
    return results


def validate(results: dict) -> None:
    """Raise jsonschema.ValidationError unless `results` follows Gradescope's schema."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(results))
    if error is not None:
        raise error


def stage_scores(results: dict) -> dict[str, tuple[float, float]]:
    """{stage: (score, max_score)} from a results.json."""
    totals: dict[str, list[float]] = {}
    for test in results["tests"]:
        stage = test["tags"][0] if test.get("tags") else "?"
        entry = totals.setdefault(stage, [0.0, 0.0])
        entry[0] += test["score"]
        entry[1] += test["max_score"]
    return {stage: (round(s, 4), round(m, 4)) for stage, (s, m) in totals.items()}


def grader_errors(results: dict) -> list[str]:
    """Names of the tests the grader itself could not run (a bug in a hidden test, not in the submission)."""
    return [t["name"] for t in results["tests"] if GRADER_ERROR in t.get("tags", ())]


class ResultsNotWritten(OSError):
    """`path` could not be written; the results went to `fallback` instead (its message says so)."""

    def __init__(self, path: Path, fallback: Path, reason: str):
        super().__init__(f"could not write the results to {path} ({reason}); they were written to {fallback}")
        self.path, self.fallback = path, fallback


def write(results: dict, path: Path) -> Path:
    """Write results.json atomically (a temporary file in the same folder, then a rename), so that
    a reader never sees half a file and nothing a worker left at `path` is followed. If `path`
    cannot be written (a folder there, no permission), the results go to a fresh file in the
    temporary folder and ResultsNotWritten says where; returns the path written."""
    import os
    import tempfile

    path = Path(path)
    text = json.dumps(results, indent=2) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, text)
        return path
    except OSError as exc:
        fd, fallback = tempfile.mkstemp(prefix="llmgrade-results-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        raise ResultsNotWritten(path, Path(fallback), exc.strerror or str(exc)) from None


def _atomic_write(path: Path, text: str) -> None:
    import os
    import tempfile

    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)   # fails on a folder at `path`; never follows a link there
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
