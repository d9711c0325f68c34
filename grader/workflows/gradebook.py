"""gradebook.csv: one row per student from the results.json files of a batch (or of its shards).

Columns: `id`, one per stage in course order (that stage's score), `total`, `max_total`,
`error`, `notes`. The stages are those found in any of the results.

`error` says what could not be graded, with its root cause, and is empty when everything
was graded (a wrong answer is a score, not an error): the batch could not grade the
submission (crash, timeout, two submissions for one id); a hidden test crashed (a grader
error); or a stage's module could not be used at all ("bigram.py: ... syntax error", an
unreadable zip, a broken notebook, an import that hung). `notes` holds what is worth
telling but changed no grade ("bigram.ipynb: graded its exported cells").
A submission the batch could not grade has empty score cells, never a false 0.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from grader.course import stages
from grader.engine import results_json
from grader.workflows.grade_all import batch_error, load_results


@dataclass
class Row:
    id: str
    scores: dict[str, tuple[float, float]]   # stage -> (score, max)
    error: str
    source: Path
    notes: str = ""


def row_for(sid: str, path: Path) -> Row:
    results = load_results(path)
    if results is None:
        return Row(sid, {}, f"{path} is not a valid results.json", path)
    extra = results.get("extra_data") or {}
    error = batch_error(results)
    if not error and results_json.grader_errors(results):
        error = "grader error in: " + "; ".join(results_json.grader_errors(results))
    if "llmgrade_problems" in extra:
        notes = "\n".join(extra.get("llmgrade_notes") or ())
        if not batch_error(results):
            error = "\n".join(filter(None, [error, *_root_causes(extra["llmgrade_problems"])]))
        if extra.get("llmgrade_not_started"):
            error = "\n".join(filter(None, [error, f"{extra['llmgrade_not_started']} tests not graded: "
                                                    "the run's time budget ran out"]))
    else:   # a results.json from before llmgrade recorded its problems: read its output
        notes = ""
        problems = [line for line in results.get("output", "").splitlines() if not line.startswith("Graded")]
        if not error and problems:
            error = "\n".join(problems)
        if not batch_error(results):
            error = "\n".join(filter(None, [error, *_ungradable_stages(results, error)]))
    return Row(sid, results_json.stage_scores(results), " | ".join(error.splitlines()), path,
               " | ".join(notes.splitlines()))


def _root_causes(problems: dict[str, str]) -> list[str]:
    """One line per root cause. A module whose failure names another failed module's file (it
    imports it) points there instead of repeating the message; a reason shared by more than two
    modules (an unreadable zip) is given once, alone."""
    first = {module: (text.splitlines() or ["unusable"])[0] for module, text in problems.items()}
    by_reason: dict[str, list[str]] = {}
    for module, reason in first.items():
        upstream = [f"{m}.py" for m in first if m != module and f"{m}.py" in reason]
        if upstream:
            reason = f"cannot be imported because {upstream[0]} cannot"
        by_reason.setdefault(reason, []).append(f"{module}.py")
    return [reason if len(modules) > 2 or (len(modules) == 1 and modules[0] in reason.split(":")[0])
            else f"{', '.join(modules)}: {reason}" for reason, modules in by_reason.items()]


def _ungradable_stages(results: dict, already: str) -> list[str]:
    """"<stage>: <message>" for each stage whose every test failed with the same message
    (a missing module, an import that crashed), unless `already` says it."""
    outputs: dict[str, set[str]] = {}
    scored: dict[str, float] = {}
    for test in results["tests"]:
        stage = test["tags"][0] if test.get("tags") else "?"
        outputs.setdefault(stage, set()).add(test.get("output", "").strip())
        scored[stage] = scored.get(stage, 0.0) + test["score"]
    return [f"{stage}: {next(iter(found))}" for stage, found in outputs.items()
            if len(found) == 1 and scored[stage] == 0 and next(iter(found)) not in already
            and next(iter(found)) not in ("", "failed")]


def collect(folders: list[Path], only: set[str] | None = None) -> tuple[list[Row], list[str]]:
    """Rows of every `<folder>/<id>/results.json` (ids in `only`, when given), sorted by id;
    and a warning per duplicate id.

    An id found in more than one folder keeps its newest results.json (by modification time).
    """
    rows: dict[str, Row] = {}
    warnings = []
    for folder in folders:
        for path in sorted(Path(folder).glob("*/results.json")):
            if only is not None and path.parent.name not in only:
                continue
            row = row_for(path.parent.name, path)
            old = rows.get(row.id)
            if old is not None:
                newer = row if path.stat().st_mtime >= old.source.stat().st_mtime else old
                warnings.append(f"{row.id} is graded in both {old.source.parent.parent} and "
                                f"{path.parent.parent}: kept the newer, {newer.source}")
                row = newer
            rows[row.id] = row
    return [rows[sid] for sid in sorted(rows)], warnings


def stage_columns(rows: list[Row]) -> list[str]:
    found = {name for row in rows for name in row.scores}
    ordered = [s.name for s in stages.discover() if s.name in found]
    return ordered + sorted(found - set(ordered))


def write(rows: list[Row], path: Path) -> None:
    columns = stage_columns(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *columns, "total", "max_total", "error", "notes"])
        for row in rows:
            if not row.scores:
                writer.writerow([row.id, *[""] * len(columns), "", "", row.error, row.notes])
                continue
            cells = [_num(row.scores[c][0]) if c in row.scores else "" for c in columns]
            total = sum(s for s, _ in row.scores.values())
            maximum = sum(m for _, m in row.scores.values())
            writer.writerow([row.id, *cells, _num(total), _num(maximum), row.error, row.notes])


def _num(value: float) -> str:
    return f"{round(value, 4):g}"
