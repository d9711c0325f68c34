"""The stage notebooks are generated from the skeletons and handouts, export the skeleton's code, and grade."""

import ast

import nbformat
import pytest

from grader.course import notebook_build, stages
from grader.engine.grade import GradeOptions, grade
from grader.engine.notebooks import export_module
from grader.engine.results_json import stage_scores


def test_committed_notebooks_match_their_skeletons_and_handouts():
    stale = notebook_build.drifted()
    assert not stale, ("regenerate with `llmgrade sync`: "
                       f"{[str(notebook_build.notebook_path(s)) for s in stale]}")


@pytest.mark.parametrize("stage", stages.discover(), ids=lambda s: s.name)
def test_notebook_exports_the_skeleton(stage):
    path = notebook_build.notebook_path(stage)
    notebook = nbformat.read(str(path), as_version=4)
    nbformat.validate(notebook)
    exported = ast.parse(export_module(path))
    skeleton = ast.parse(stage.skeleton.read_text(encoding="utf-8"))
    names = lambda tree: [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]  # noqa: E731
    assert names(exported) == names(skeleton)
    assert ast.dump(exported) == ast.dump(skeleton)   # the same code, comments aside
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.source.startswith("#| export\n") for c in code[:-1])
    assert not code[-1].source.startswith("#| export")   # the scratch cell is never graded
    markdown = "\n\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    for line in stage.handout.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            assert line in markdown


def test_markdown_splits_at_level_two_headings_outside_code_fences():
    text = "# Title\nintro\n\n## 1. One\nbody\n```python\n## not a heading\n```\n## Your task\ntask\n## Common mistakes\nx\n"
    sections = notebook_build.split_markdown(text)
    assert [s.split("\n")[0] for s in sections] == ["# Title", "## 1. One", "## Your task", "## Common mistakes"]
    assert "## not a heading" in sections[1]
    notebook = notebook_build.make_notebook("import torch\n\n\ndef f():\n    pass\n", text, "m")
    kinds = [(c.cell_type, c.source.split("\n")[0]) for c in notebook.cells]
    task = kinds.index(("markdown", "## Your task"))
    assert kinds[task + 1] == ("code", "#| export") and kinds[task + 2] == ("code", "#| export")
    assert kinds[-1] == ("markdown", "## Common mistakes")
    assert [c["id"] for c in notebook.cells] == [f"m-{i}" for i in range(1, len(notebook.cells) + 1)]


def test_code_splits_before_each_top_level_def_with_its_decorators_and_comments():
    source = ('"""doc"""\nimport torch\n\nX = 1\n\n\n# about f\n@torch.no_grad()\ndef f():\n    return 1\n\n\n'
              'class C:\n    def g(self):\n        pass\n')
    chunks = notebook_build.split_code(source)
    assert chunks == ['"""doc"""\nimport torch\n\nX = 1', "# about f\n@torch.no_grad()\ndef f():\n    return 1",
                      "class C:\n    def g(self):\n        pass"]


@pytest.mark.slow
def test_a_notebook_of_the_reference_scores_full_marks(tmp_path):
    stage = stages.select(["bigram"])[0]
    text = notebook_build.notebook_text(stage.solution.read_text(encoding="utf-8"),
                                        stage.handout.read_text(encoding="utf-8"), "bigram")
    (tmp_path / "bigram.ipynb").write_text(text, encoding="utf-8")
    results = grade(tmp_path, GradeOptions(stage_names=["bigram"], device="cpu"))
    score, maximum = stage_scores(results)["bigram"]
    assert maximum > 0 and score == maximum, [t["output"] for t in results["tests"] if t["status"] != "passed"]
    assert "bigram.ipynb: graded its exported cells" in results["output"]


@pytest.mark.parametrize("stage", stages.discover(), ids=lambda s: s.name)
def test_the_intro_names_the_module_once(stage):
    """The intro says `bigram.py`, never `bigram.py.py`."""
    text = notebook_build.expected_text(stage)
    assert f"`{stage.name}.py`" in text and ".py.py" not in text
