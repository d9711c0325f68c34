"""Which section of its stage's handout a test is about, so that feedback can point there.

    section_for("bigram", "bigram: nll of the training words")  -> "02-bigram.md, § 5. Measuring quality: ..."

A test's name (its docstring's first line) names the function or class it checks (a
name the stage's skeleton defines). Its section is the numbered section of the handout
(`## 4. ...`) whose heading names that identifier, or else whose text names it most often
(case aside), leaving out the general ones (banned APIs, devices, grading); a name that
no such section mentions is read in "Your task" (its signature and docstring). A test
that names no function goes to the section whose heading holds a long word of its name
("warm-up"). Handouts
are read from `assignments/handouts/`, in the course repository and the student
bundle alike; a stage without one gives None.
"""

from __future__ import annotations

import functools
import re

from grader.course import stages

_IDENTIFIER = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
_NUMBERED = re.compile(r"^\d+\.")
_GENERAL = re.compile(r"banned|graded|devices", re.IGNORECASE)   # sections that name every function


@functools.lru_cache(maxsize=None)
def _api(stage_name: str) -> frozenset[str]:
    """The functions and classes the stage's skeleton defines (read with ast, never imported)."""
    import ast

    try:
        [stage] = stages.select([stage_name])
        tree = ast.parse(stage.skeleton.read_text(encoding="utf-8"))
    except (ValueError, OSError, SyntaxError):
        return frozenset()
    return frozenset(node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef)))


@functools.lru_cache(maxsize=None)
def _sections(stage_name: str) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """(handout file name, ((heading, text), ...)) for the stage, or None."""
    try:
        [stage] = stages.select([stage_name])
        text = stage.handout.read_text(encoding="utf-8")
    except (ValueError, OSError):
        return None
    found, heading, lines = [], None, []
    for line in text.splitlines():
        if line.startswith("## "):
            if heading is not None:
                found.append((heading, "\n".join(lines)))
            heading, lines = line[3:].strip(), []
        elif heading is not None:
            lines.append(line)
    if heading is not None:
        found.append((heading, "\n".join(lines)))
    return stage.handout.name, tuple(found)


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def section_for(stage_name: str, test_name: str) -> str | None:
    """"<handout file>, § <heading>" for the test, or None when the stage has no handout."""
    sections = _sections(stage_name)
    if not sections:
        return None
    handout, parts = sections
    api = _api(stage_name)
    said = _IDENTIFIER.findall(test_name.split(":", 1)[-1].replace("-", ""))
    numbered = [(heading, text) for heading, text in parts if _NUMBERED.match(heading) and not _GENERAL.search(heading)]
    def in_heading(words):
        return next((heading for word in words for heading, _ in numbered if _squash(word) in _squash(heading)), None)

    named = [w for w in said if w in api]   # what the test checks, first
    heading = in_heading(named)             # "LayerNorm" -> "1. Layer norm"
    for word in named if heading is None else ():   # else the section that names it most often
        pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
        counts = [len(pattern.findall(text)) for _, text in numbered]
        if counts and max(counts) > 0:
            heading = numbered[counts.index(max(counts))][0]
            break
    if heading is None and not named:   # names no function: "warm-up" -> "3. Warm-up and ..."
        heading = in_heading([w for w in said if len(w) >= 5])
    if heading:
        return f"{handout}, § {heading}"
    task = next((heading for heading, _ in parts if heading.lower() == "your task"), None)
    return f"{handout}, § {task}" if task else handout
