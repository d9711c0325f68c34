"""`llmgrade new-stage NAME`: every file of a new stage, ready to fill in and already gradable.

    from grader.course.scaffold import new_stage
    written = new_stage("rope")      # handout, reference, hidden and public tests, corpus folders

A stage is files only (grader/course/stages.py); this writes them from the templates below:

    assignments/handouts/NN-NAME.md       the handout (NN: after the last stage)
    solutions/NAME.py                     the reference, one function between solution markers
    autograder_tests/NAME/test_NAME.py    a hidden test against the reference
    assignments/tests/test_NAME.py        a public test with the handout's worked example
    tests/corpus/NAME/{buggy,correct}/    a bug (a patch) and a correct style to start the corpus

then `llmgrade sync` (grader/course/sync.py) generates the skeleton, the notebook and the README's
stage table. The toy function (a scaled sum) grades as it stands: the reference gets full
marks, the skeleton none, the buggy entry loses points (tests/test_scaffold.py). Replace it.
"""

from __future__ import annotations

import re
from pathlib import Path

from grader.course import stages
from grader.errors import UsageProblem

NAME = re.compile(r"^[a-z][a-z0-9_]*$")

HANDOUT = '''# Stage {order} — {title}

Write `{name}.py` with the function below. (Replace this toy with the stage's real content.)

## 1. What to build

`scaled_sum(x, scale)`: the sum of `x` over its last dimension, times `scale`.

- `x`: `(..., C)` float tensor; returns `(...)` of `x`'s dtype, on `x`'s device.

## 2. Worked example

`scaled_sum(torch.tensor([[1., 2.], [3., 4.]]), 0.5)` is `tensor([1.5, 3.5])`.

## Common mistakes

- Summing over the first dimension instead of the last.
'''

REFERENCE = '''"""Stage {order} — {title}: the reference (the skeleton is generated from it: solution markers).

See assignments/handouts/{order:02d}-{name}.md.
"""

import torch


def scaled_sum(x: torch.Tensor, scale: float) -> torch.Tensor:
    """The sum of `x` over its last dimension, times `scale`.

    x: (..., C) float tensor. Returns (...) of x's dtype, on x's device.
    """
    # BEGIN SOLUTION
    return x.sum(dim=-1) * scale
    # END SOLUTION
'''

HIDDEN_TEST = '''"""Hidden tests of stage `{name}` (handout {order:02d}-{name}.md)."""

import pytest
import torch

from grader.testing import expect_close


@pytest.mark.points(2)
def test_scaled_sum_matches_the_reference(student, reference, device):
    """scaled_sum over the last dim of a (3, 4, 5) tensor, scale 0.5"""
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0)).to(device)
    expect_close(student.{name}.scaled_sum(x, 0.5), reference.scaled_sum(x, 0.5),
                 what="scaled_sum(x, 0.5)")


@pytest.mark.points(1)
def test_scaled_sum_sums_the_last_dim(student, device):
    """scaled_sum sums the last dim, not the first"""
    x = torch.arange(6.0, device=device).reshape(2, 3)
    expect_close(student.{name}.scaled_sum(x, 1.0), torch.tensor([3.0, 12.0], device=device),
                 what="scaled_sum of [[0, 1, 2], [3, 4, 5]] (sum the last dim, not the first)")
'''

PUBLIC_TEST = '''"""Public tests of stage `{name}`: run them with `llmgrade check {name}`."""

import pytest
import torch

from grader.testing import expect_close

pytestmark = pytest.mark.stage("{name}")


def test_worked_example(student):
    """the handout's worked example"""
    got = student.{name}.scaled_sum(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), 0.5)
    expect_close(got, torch.tensor([1.5, 3.5]), what="scaled_sum([[1, 2], [3, 4]], 0.5)")
'''

BUG_HEADER = """BUG: sums over the first dimension instead of the last.
EXPECT: sum the last dim
CAUGHT_BY: test_{name}.py::test_scaled_sum_sums_the_last_dim

"""

CORRECT = '''"""STYLE: a Python loop over the last dimension, accumulated in float64."""

import torch


def scaled_sum(x, scale):
    total = torch.zeros(x.shape[:-1], dtype=torch.float64, device=x.device)
    for c in range(x.shape[-1]):
        total = total + x[..., c].double()
    return (total * scale).to(x.dtype)
'''


def new_stage(name: str, root: Path | None = None, title: str | None = None) -> list[Path]:
    """Write the files of stage `name` under `root` (the course); returns them. Refuses a bad
    name or an existing stage, and writes nothing over an existing file."""
    root = Path(root or stages.project_root())
    if not NAME.match(name):
        raise UsageProblem(f"{name!r} is not a stage name: lower case letters, digits and _, "
                           "starting with a letter (it is also the module students write)")
    existing = stages.discover(root)
    if any(s.name == name for s in existing):
        raise UsageProblem(f"stage {name!r} exists already")
    order = max((s.order for s in existing), default=0) + 1
    values = {"name": name, "order": order, "title": title or name.replace("_", " ").capitalize()}
    files = {
        root / "assignments" / "handouts" / f"{order:02d}-{name}.md": HANDOUT,
        root / "solutions" / f"{name}.py": REFERENCE,
        root / "autograder_tests" / name / f"test_{name}.py": HIDDEN_TEST,
        root / "assignments" / "tests" / f"test_{name}.py": PUBLIC_TEST,
        root / "tests" / "corpus" / name / "correct" / "loop_float64.py": CORRECT,
    }
    taken = [str(p) for p in files if p.exists()]
    if taken:
        raise UsageProblem(f"not overwriting {', '.join(taken)}")
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
    return [*files, _write_bug(name, root, values)]


def _write_bug(name: str, root: Path, values: dict) -> Path:
    """The first buggy corpus entry: a patch against the marker-free reference (grader/course/corpus.py)."""
    from grader.course.corpus import reference_files
    from grader.course.corpus_convert import make_diff

    reference = reference_files(name, root)
    buggy = {**reference, f"{name}.py": reference[f"{name}.py"].replace("x.sum(dim=-1)", "x.sum(dim=0)")}
    path = root / "tests" / "corpus" / name / "buggy" / "first_dim.patch"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BUG_HEADER.format(**values) + make_diff(reference, buggy), encoding="utf-8")
    return path
