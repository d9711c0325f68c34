"""Authoring the corpus: turn a whole-file buggy entry into a patch (python -m grader.course.corpus --to-patch).

Write a new bug as a whole copy of the reference (solutions/<stage>.py without its
solution markers) with a docstring holding BUG:/EXPECT:/PART:/REQUIRES:, then convert
it: CAUGHT_BY is taken from a real grading (the first hidden test that catches and
names the bug), and the patch is made against the reference or, when that is much
closer, one of the stage's correct entries (`BASE: correct/<name>`, whatever its form).
"""

from __future__ import annotations

import ast
import copy
import difflib
import re
import shutil
from pathlib import Path

from grader.course import stages
from grader.course.corpus import Entry, entries, entry_files, find_entry, judge, reference_files
from grader.engine.grade import GradeOptions


def make_diff(before: dict[str, str], after: dict[str, str], context: int = 3) -> str:
    """A unified diff (a/ and b/ paths, /dev/null for a new or removed file) from `before` to `after`."""
    out = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        out += difflib.unified_diff((old or "").splitlines(keepends=True), (new or "").splitlines(keepends=True),
                                    f"a/{name}" if old is not None else "/dev/null",
                                    f"b/{name}" if new is not None else "/dev/null", n=context)
    if any(not line.endswith("\n") for line in out):
        raise ValueError("a file does not end with a newline; add one before making a patch")
    return "".join(out)


def node_id(stage: str, function: str) -> str:
    """`test_<file>.py::<function>` for a test function of the stage's hidden suite."""
    suite = stages.project_root() / "autograder_tests" / stage
    for path in sorted(suite.glob("test_*.py")):
        if re.search(rf"^\s*(async )?def {re.escape(function)}\(", path.read_text(encoding="utf-8"), re.MULTILINE):
            return f"{path.name}::{function}"
    raise LookupError(f"no test function {function} in {suite}")


_BOILERPLATE = re.compile(r"^The reference( \w+\.py)? with exactly this one mistake \(corpus for the autograder\)\.\s*")


def to_patch(entry: Entry, caught_by: str, *, base: str | None = None, most: float = 0.6) -> str | None:
    """The patch text for a whole-file buggy entry: its docstring's lines (less the boilerplate)
    and `CAUGHT_BY:` as the header, then the diff from the marker-free reference to the entry
    with its docstring replaced by the reference's. None when the diff changes more than `most`
    of the stage module's lines (the entry is not close to the reference: it stays whole).
    `base` ("correct/naive_recount"): the diff is made against that correct entry (a file, a folder
    or a patch, materialised) instead."""
    root = entry.path.parent.parent.parent
    before = entry_files(find_entry(root, f"{entry.stage}/{base}")) if base else reference_files(entry.stage)
    after = dict(before)
    if entry.path.is_dir():
        for name in before:
            if not (entry.path / name).exists() and name.removesuffix(".py") not in entry.reference_modules:
                del after[name]
        after |= {p.name: p.read_text(encoding="utf-8") for p in sorted(entry.path.iterdir()) if p.is_file()}
    else:
        after[f"{entry.stage}.py"] = entry.path.read_text(encoding="utf-8")
    module = f"{entry.stage}.py"
    tree, reference = ast.parse(after[module]), ast.parse(before[module])
    docstring = ast.get_docstring(tree, clean=False)
    doc, reference_doc = tree.body[0], reference.body[0]   # the docstrings' statements
    lines, reference_lines = after[module].splitlines(keepends=True), before[module].splitlines(keepends=True)
    after[module] = "".join(lines[:doc.lineno - 1] + reference_lines[reference_doc.lineno - 1:reference_doc.end_lineno]
                            + lines[doc.end_lineno:])
    diff = make_diff(before, after)
    changed = sum(1 for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))
    if changed > most * len(before[module].splitlines()):
        return None
    header = [_BOILERPLATE.sub("", line).rstrip() for line in docstring.strip().splitlines()]
    keys = [i for i, line in enumerate(header) if re.match(r"(BUG|EXPECT|PART|REQUIRES):", line)]
    end = keys[-1] + 1
    while end < len(header) and header[end].strip():   # the last key's own continuation lines
        end += 1
    header[end:end] = [f"CAUGHT_BY: {caught_by}"] + ([f"BASE: {base}"] if base else [])
    return re.sub(r"\n{3,}", "\n\n", "\n".join(header).strip()) + "\n\n" + diff


def convert(entry: Entry, options: GradeOptions | None = None) -> Path | None:
    """Replace a whole-file buggy entry by `<name>.patch`, against the reference or, when that is
    closer, one of the stage's correct entries (BASE:). CAUGHT_BY is the first hidden test that
    catches and names the bug in a real grading. Returns the patch; None when the entry stays whole
    (not caught, or not close to any base)."""
    verdict = judge(entry, options)
    if not verdict.first_named:
        return None
    caught_by = node_id(entry.stage, verdict.first_named)
    bases = [None] + [f"correct/{e.path.stem}" for e in entries(entry.path.parent.parent.parent, [entry.stage])
                      if e.kind == "correct"]
    texts = sorted((len(text), text) for text in (to_patch(entry, caught_by, base=b) for b in bases) if text)
    if not texts:
        return None
    patch = entry.path.with_name(f"{entry.path.stem}.patch")
    patch.write_text(texts[0][1], encoding="utf-8")
    shutil.rmtree(entry.path) if entry.path.is_dir() else entry.path.unlink()
    return patch


def convert_all(corpus_root: Path, stage_names: list[str] | None, names: list[str] | None,
                options: GradeOptions) -> int:
    """Convert every whole-file buggy entry (of those stages / names) and print what became of each."""
    for entry in entries(corpus_root, stage_names, names):
        if entry.kind == "buggy" and not entry.is_patch:
            patch = convert(entry, copy.copy(options))
            print(f"{entry.name:48} {patch or 'stays whole (not caught, or not close to a base)'}")
    return 0
