"""docs/contract-coverage.md stays true: every test and corpus entry it names exists, no clause lacks a test."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "contract-coverage.md"
CORPUS = ROOT / "tests" / "corpus"
STAGES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())

# "test_x.py::test_a, test_b" or "::test_c": a file, then test functions in it until the next file.
_TEST_REF = re.compile(r"(?:([\w./-]+\.py)?::)?\b(test_\w+)")
_ENTRY_REF = re.compile(r"\b(?:(\w+)/)?(buggy|correct)/(\w+)")


def cells_of(line: str) -> list[str]:
    """A markdown table row's cells; a `|` inside backticks or escaped as \\| is text."""
    cells, current, in_code, previous = [], "", False, ""
    for char in line.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code and previous != "\\":
            cells.append(current.strip())
            current = ""
        else:
            current += char
        previous = char
    return cells + [current.strip()]


def rows():
    """(stage or None, clause, tests cell, corpus cell) for every table row of the document."""
    stage, found = None, []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"#+ .*?`?(\w+)`?", line)
        if heading and line.startswith("#"):
            words = re.findall(r"\w+", line)
            stage = next((w for w in words if w in STAGES), None)
        cells = cells_of(line) if line.startswith("|") else []
        if len(cells) >= 3 and not set(cells[0]) <= set("-: ") and not cells[0].lower().startswith("clause"):
            found.append((stage, cells[0], cells[1], cells[2]))
    return found


def _test_file(name: str, stage: str | None) -> Path | None:
    if "/" in name:
        return ROOT / name
    for folder in ([ROOT / "autograder_tests" / stage] if stage else []) + [ROOT / "tests"]:
        if (folder / name).exists():
            return folder / name
    hits = list((ROOT / "autograder_tests").glob(f"*/{name}"))
    return hits[0] if hits else None


def test_every_clause_has_a_test_that_exists():
    problems, count = [], 0
    for stage, clause, tests, _ in rows():
        refs = _TEST_REF.findall(tests.replace("`", ""))
        # "— (reason)": the contract asks nothing testable here (undefined behaviour), and says why.
        if not refs and "see the" not in tests and not re.match(r"— \(.+\)", tests):
            problems.append(f"{stage}: no test named for {clause!r}")
        current = None
        for file_name, function in refs:
            current = _test_file(file_name, stage) if file_name else current
            count += 1
            if current is None or not current.exists():
                problems.append(f"{stage}: {clause!r}: no file {file_name!r}")
            elif not re.search(rf"^\s*(async )?def {function}\b", current.read_text(encoding="utf-8"), re.M):
                problems.append(f"{stage}: {clause!r}: {current.relative_to(ROOT)} has no {function}")
    assert count > 100 and not problems, "\n".join(problems)


def test_every_corpus_entry_named_exists():
    problems = []
    for stage, clause, _, entries in rows():
        for entry_stage, kind, name in _ENTRY_REF.findall(entries):
            folder = CORPUS / (entry_stage or stage or "?") / kind
            if not any((folder / f"{name}{end}").exists() for end in (".py", ".patch", "")):
                problems.append(f"{clause!r}: no corpus entry {entry_stage or stage}/{kind}/{name}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_its_table(stage):
    assert sum(1 for s, *_ in rows() if s == stage) >= 5
