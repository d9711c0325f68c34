"""Generate the stage notebooks from the skeletons and the handouts.

`assignments/<stage>.ipynb` is the notebook form of `assignments/<stage>.py`:
the handout, split at its `## ` headings, as markdown cells, and the skeleton's
code as `#| export` code cells (one for the module's header — docstring,
imports, constants — then one per top-level function or class). The code cells
go after the handout's "Your task" section (or, without one, before "Common
mistakes" / "Checking your work", or at the end), followed by one scratch cell
that is not exported. Joined in order, the exported cells are the skeleton's
code (grader/engine/notebooks.py), so a notebook is graded exactly as a `.py` would be.

Built from the SKELETON, never from a solution; committed; a test fails on drift.

`llmgrade sync` regenerates them (with the skeletons and README.md's stage table).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
from nbformat import v4

from grader.course import stages

EXPORT = "#| export"
INTRO = (
    "**How this notebook is graded.** Only the code cells whose first line is `{export}` are "
    "graded: joined in order, they are your `{module}.py`. Write your code in them (keep the "
    "`{export}` line); use other cells to experiment — the grader never runs those. "
    "Submit `{stem}.ipynb` in place of `{module}.py` (not both: when both are present, "
    "`{module}.py` is graded). `llmgrade check {stem}` runs the public tests on it."
)
SCRATCH = "# Try your code here. This cell is not exported, so the grader never runs it.\n"
_CODE_AFTER = ("your task",)
_CODE_BEFORE = ("common mistakes", "checking your work")
_FENCE = re.compile(r"^\s*(```|~~~)")


def split_markdown(text: str) -> list[str]:
    """The handout cut before each `## ` heading (headings inside fenced code do not count)."""
    sections, current, fenced = [], [], False
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            fenced = not fenced
        if line.startswith("## ") and not fenced and current:
            sections.append("".join(current))
            current = []
        current.append(line)
    if current:
        sections.append("".join(current))
    return [s.strip("\n") for s in sections if s.strip()]


def split_code(source: str) -> list[str]:
    """The module cut before each top-level def/class (with its decorators and the comments just above)."""
    lines = source.splitlines(keepends=True)
    starts = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            while start > 0 and lines[start - 1].lstrip().startswith("#"):
                start -= 1
            starts.append(start)
    bounds = [0] + [s for s in starts if s > 0] + [len(lines)]
    chunks = ["".join(lines[a:b]).strip("\n") for a, b in zip(bounds, bounds[1:])]
    return [c for c in chunks if c.strip()]


def _heading(section: str) -> str:
    first = section.split("\n", 1)[0]
    return re.sub(r"^##\s+(\d+\.\s*)?", "", first).strip().lower() if first.startswith("## ") else ""


def _code_position(sections: list[str]) -> int:
    """Index of the markdown section the code cells go before."""
    headings = [_heading(s) for s in sections]
    for i, heading in enumerate(headings):
        if heading in _CODE_AFTER:
            return i + 1
    for i, heading in enumerate(headings):
        if heading in _CODE_BEFORE:
            return i
    return len(sections)


def make_notebook(module_source: str, handout: str, stem: str) -> nbformat.NotebookNode:
    """The notebook of module `stem`: handout sections as markdown, `module_source` as export cells.

    Cell ids are `<stem>-<n>`, so the same inputs always give the same file.
    """
    sections = split_markdown(handout)
    position = _code_position(sections)
    intro = INTRO.format(export=EXPORT, module=stem, stem=stem)
    markdown = [v4.new_markdown_cell(s) for s in sections]
    code = [v4.new_code_cell(f"{EXPORT}\n{chunk}") for chunk in split_code(module_source)]
    cells = (markdown[:1] + [v4.new_markdown_cell(intro)] + markdown[1:position] + code
             + [v4.new_code_cell(SCRATCH.rstrip("\n"))] + markdown[position:])
    for number, cell in enumerate(cells, start=1):
        cell["id"] = f"{stem}-{number}"
    notebook = v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    })
    nbformat.validate(notebook)
    return notebook


def notebook_text(module_source: str, handout: str, stem: str) -> str:
    return nbformat.writes(make_notebook(module_source, handout, stem)) + "\n"


def notebook_path(stage: stages.Stage) -> Path:
    return stage.skeleton.with_suffix(".ipynb")


def expected_text(stage: stages.Stage) -> str:
    return notebook_text(stage.skeleton.read_text(encoding="utf-8"),
                         stage.handout.read_text(encoding="utf-8"), stage.name)


def drifted(root=None) -> list[stages.Stage]:
    """Stages whose committed notebook differs from the one their skeleton and handout generate."""
    stale = []
    for stage in stages.discover(root):
        if not stage.skeleton.exists():
            continue
        path = notebook_path(stage)
        if not path.exists() or path.read_text(encoding="utf-8") != expected_text(stage):
            stale.append(stage)
    return stale


def write_all(root=None) -> list[stages.Stage]:
    written = drifted(root)
    for stage in written:
        notebook_path(stage).write_text(expected_text(stage), encoding="utf-8")
    return written
