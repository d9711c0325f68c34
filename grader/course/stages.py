"""Where the course's pieces live, and which stages there are.

A stage is defined by files, never by code in the grader:

    assignments/handouts/NN-<stage>.md   the handout; NN orders the stages, its first heading titles it
    solutions/<stage>.py                 the reference (with solution markers)
    assignments/<stage>.py               the skeleton, generated from the reference
    assignments/tests/test_<stage>.py    public tests
    assignments/tests/fixtures_<stage>.py  (optional) objects its tests build in the worker
    autograder_tests/<stage>/test_*.py   hidden tests

The stage's name is also the name of the module a submission provides.
`LLMGRADE_ROOT` points the grader at another copy of the course.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_HANDOUT = re.compile(r"^(\d+)-([a-z_][a-z0-9_]*)\.md$")


def project_root() -> Path:
    return Path(os.environ.get("LLMGRADE_ROOT") or Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    order: int
    root: Path

    @property
    def module(self) -> str:
        return f"{self.name}.py"

    @property
    def handout(self) -> Path:
        return self.root / "assignments" / "handouts" / f"{self.order:02d}-{self.name}.md"

    @property
    def solution(self) -> Path:
        return self.root / "solutions" / self.module

    @property
    def skeleton(self) -> Path:
        return self.root / "assignments" / self.module

    @property
    def public_tests(self) -> Path:
        return self.root / "assignments" / "tests" / f"test_{self.name}.py"

    @property
    def worker_fixtures(self) -> Path:
        """Objects this stage's tests build inside the worker (grader/worker/fixtures.py); optional."""
        return self.root / "assignments" / "tests" / f"fixtures_{self.name}.py"

    @property
    def hidden_tests(self) -> Path:
        return self.root / "autograder_tests" / self.name


def discover(root: Path | None = None) -> list[Stage]:
    """Every stage that has a handout, in course order."""
    root = root or project_root()
    stages = []
    for path in sorted((root / "assignments" / "handouts").glob("*.md")):
        match = _HANDOUT.match(path.name)
        if match:
            title = next((line[2:].strip() for line in path.read_text(encoding="utf-8").splitlines()
                          if line.startswith("# ")), match[2])
            stages.append(Stage(match[2], title, int(match[1]), root))
    return sorted(stages, key=lambda s: s.order)


def select(names: list[str] | tuple[str, ...] | None, root: Path | None = None) -> list[Stage]:
    """The named stages (all when `names` is empty); an unknown name is a ValueError."""
    stages = discover(root)
    if not names:
        return stages
    by_name = {s.name: s for s in stages}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}; the stages are: {', '.join(by_name)}")
    return [by_name[n] for n in names]
