"""gradebook.csv: one row per student from the results.json files of a batch (or of its shards).

Columns: `id`, one per stage in course order (that stage's score), `total`, `max_total`,
`error`. The stages are those found in any of the results. `error` is empty when the
submission was graded cleanly; otherwise the reason: the batch could not grade it
(crash, timeout, two submissions for one id), a hidden test crashed (a grader error), or
the submission-level message of grade (an unreadable zip, a broken notebook, a note).
A submission the batch could not grade has empty score cells, never a false 0.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from grader import results as gradescope
from grader import stages
from grader.grade_all import batch_error, load_results


@dataclass
class Row:
    id: str
    scores: dict[str, tuple[float, float]]   # stage -> (score, max)
    error: str
    source: Path


def row_for(sid: str, path: Path) -> Row:
    results = load_results(path)
    if results is None:
        return Row(sid, {}, f"{path} is not a valid results.json", path)
    error = batch_error(results)
    if not error and gradescope.grader_errors(results):
        error = "grader error in: " + "; ".join(gradescope.grader_errors(results))
    problems = [line for line in results.get("output", "").splitlines() if not line.startswith("Graded")]
    if not error and problems:
        error = "\n".join(problems)
    if not batch_error(results):
        error = "\n".join(filter(None, [error, *_ungradable_stages(results, error)]))
    return Row(sid, gradescope.stage_scores(results), " | ".join(error.splitlines()), path)


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
        writer.writerow(["id", *columns, "total", "max_total", "error"])
        for row in rows:
            if not row.scores:
                writer.writerow([row.id, *[""] * len(columns), "", "", row.error])
                continue
            cells = [_num(row.scores[c][0]) if c in row.scores else "" for c in columns]
            total = sum(s for s, _ in row.scores.values())
            maximum = sum(m for _, m in row.scores.values())
            writer.writerow([row.id, *cells, _num(total), _num(maximum), row.error])


def _num(value: float) -> str:
    return f"{round(value, 4):g}"
