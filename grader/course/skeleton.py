"""Generate the student skeletons from the reference solutions.

In a reference, each solution block is fenced by markers:

        # BEGIN SOLUTION
        ...the reference code...
        # END SOLUTION

and becomes, in the skeleton, `raise NotImplementedError` under a TODO line.
`# BEGIN SOLUTION stub: EXPR` puts `EXPR` there instead (for module-level
constants that must stay importable). Everything outside the markers is copied
as it is. The skeletons are committed; a test fails when they drift.

`llmgrade sync` regenerates them (with the notebooks and README.md's stage table).
"""

from __future__ import annotations

import re

from grader.course import stages

_BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION(?:\s+stub:\s*(?P<stub>.*))?\s*$")
_END = re.compile(r"^\s*# END SOLUTION\s*$")

HEADER = "# Your file for this stage: replace each NotImplementedError with your code.\n"


class MarkerError(ValueError):
    pass


def make_skeleton(source: str, name: str = "<solution>") -> str:
    out, inside = [HEADER], None
    for number, line in enumerate(source.splitlines(keepends=True), start=1):
        begin, end = _BEGIN.match(line), _END.match(line)
        if inside is None and begin:
            inside = number
            indent = begin["indent"]
            if begin["stub"]:
                out.append(f"{indent}{begin['stub']}\n")
            else:
                out.append(f"{indent}# TODO: your code here\n{indent}raise NotImplementedError\n")
        elif inside is not None and end:
            inside = None
        elif begin or end:
            raise MarkerError(f"{name}:{number}: unbalanced solution marker")
        elif inside is None:
            out.append(line)
    if inside is not None:
        raise MarkerError(f"{name}:{inside}: BEGIN SOLUTION without END SOLUTION")
    return "".join(out)


def drifted(root=None) -> list[stages.Stage]:
    """Stages whose committed skeleton differs from the one their reference generates."""
    return [s for s in stages.discover(root) if s.solution.exists() and (
        not s.skeleton.exists()
        or s.skeleton.read_text(encoding="utf-8") != make_skeleton(s.solution.read_text(encoding="utf-8"), str(s.solution)))]


def write_all(root=None) -> list[stages.Stage]:
    written = drifted(root)
    for stage in written:
        stage.skeleton.write_text(make_skeleton(stage.solution.read_text(encoding="utf-8"),
                                                str(stage.solution)), encoding="utf-8")
    return written
