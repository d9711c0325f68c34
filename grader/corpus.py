"""The corpus that proves the hidden tests: buggy submissions must lose points, correct ones must not.

    tests/corpus/<stage>/buggy/<name>.py     one plausible student bug each
    tests/corpus/<stage>/correct/<name>.py   a correct solution in another style

Each entry is a whole `<stage>.py` (or a folder holding one and its helpers).
Its docstring says what it is: `BUG: ...` or `STYLE: ...`, and for a bug the
hidden tests name, `EXPECT: <words the feedback must contain>`. An entry whose
bug only shows on a GPU (a result left on the CPU) says `REQUIRES: cuda`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grader.grade import GradeOptions, grade
from grader.results import grader_errors

_EXPECT = re.compile(r"^\s*EXPECT:\s*(.+?)\s*$", re.MULTILINE)
_REQUIRES = re.compile(r"^\s*REQUIRES:\s*(.+?)\s*$", re.MULTILINE)


@dataclass
class Entry:
    stage: str
    kind: str          # "buggy" or "correct"
    path: Path

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.kind}/{self.path.stem}"

    @property
    def source(self) -> str:
        path = self.path if self.path.is_file() else self.path / f"{self.stage}.py"
        return path.read_text(encoding="utf-8")

    @property
    def expect(self) -> str | None:
        match = _EXPECT.search(self.source)
        return match[1] if match else None

    @property
    def requires(self) -> str | None:
        match = _REQUIRES.search(self.source)
        return match[1] if match else None


@dataclass
class Verdict:
    entry: Entry
    score: float
    max_score: float
    ok: bool
    detail: str


def entries(corpus_root: Path, stage_names: list[str] | None = None) -> list[Entry]:
    found = []
    for stage_dir in sorted(p for p in Path(corpus_root).iterdir() if p.is_dir()):
        if stage_names and stage_dir.name not in stage_names:
            continue
        for kind in ("buggy", "correct"):
            for path in sorted((stage_dir / kind).glob("*")):
                if path.suffix == ".py" or path.is_dir():
                    found.append(Entry(stage_dir.name, kind, path))
    return found


def judge(entry: Entry, options: GradeOptions | None = None) -> Verdict:
    """Grade one corpus entry with its stage's hidden tests and say whether it behaved."""
    options = options or GradeOptions()
    options.stage_names = [entry.stage]
    if entry.kind == "buggy":   # a bug is proved once one test catches it (and names it): stop there
        expect = entry.expect
        options.stop_when = lambda record: (not record.passed and not record.internal_error and (
            expect is None or expect in "\n".join(record.feedback)))
    scratch = Path(tempfile.mkdtemp(prefix="llmgrade-corpus-"))
    try:
        if entry.path.is_dir():
            shutil.copytree(entry.path, scratch / "submission")
        else:
            (scratch / "submission").mkdir()
            shutil.copy(entry.path, scratch / "submission" / f"{entry.stage}.py")
        results = grade(scratch / "submission", options)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    score = results["score"]
    crashed = grader_errors(results)
    maximum = sum(t["max_score"] for t in results["tests"])
    feedback = "\n".join(t["output"] for t in results["tests"] if t["status"] == "failed")
    if crashed:
        return Verdict(entry, score, sum(t["max_score"] for t in results["tests"]), False,
                       f"hidden tests crashed (grader errors) in: {', '.join(crashed)}")
    if entry.kind == "correct":
        ok = maximum > 0 and score == maximum
        detail = "full marks" if ok else f"lost points:\n{feedback}"
    else:
        expect = entry.expect
        named = expect is None or expect in feedback
        ok = score < maximum and named
        detail = ("caught" if score < maximum else "NOT caught: full marks") + (
            "" if named else f"; feedback does not name the mistake ({expect!r}):\n{feedback}")
    return Verdict(entry, score, maximum, ok, detail)
