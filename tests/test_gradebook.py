"""The gradebook's `error` column says what could not be graded and why (the root cause, once);
its `notes` column holds what changed no grade. A wrong answer is a score, never an error."""

import json

import pytest

from grader.course import corpus, notebook_build, stages

from grader.engine.grade import GradeOptions, grade
from grader.engine.results_json import write
from grader.workflows import gradebook

ROOT = stages.project_root()
REFERENCE = (ROOT / "solutions" / "bigram.py").read_text()


@pytest.fixture
def row(tmp_path, make_submission):
    def graded_row(files: dict[str, str], stage_names=("bigram",)) -> gradebook.Row:
        results = grade(make_submission(files), GradeOptions(stage_names=list(stage_names), device="cpu",
                                                              call_timeout=3.0))
        path = tmp_path / "out" / "sid" / "results.json"
        write(results, path)
        return gradebook.row_for("sid", path)
    return graded_row


@pytest.mark.slow
def test_a_notebook_is_a_note_not_an_error(row):
    [bigram] = stages.select(["bigram"], ROOT)
    notebook = notebook_build.notebook_text(REFERENCE, bigram.handout.read_text(), "bigram")
    graded = row({"bigram.ipynb": notebook})
    assert graded.error == "" and graded.notes == "bigram.ipynb: graded its exported cells"


@pytest.mark.slow
def test_a_syntax_error_is_the_error_of_its_own_module(row):
    """The root cause (bigram.py's syntax error), not a later stage's message about it."""
    graded = row({"bigram.py": REFERENCE + "\ndef broken(:\n    pass\n",
                  "sampling.py": "import bigram\n"}, stage_names=("bigram", "sampling"))
    line = len(REFERENCE.splitlines()) + 2
    assert graded.error == (f"importing bigram.py raised SyntaxError: invalid syntax (bigram.py, line {line}) | "
                            "sampling.py: cannot be imported because bigram.py cannot"), graded.error
    assert graded.notes == ""


@pytest.mark.slow
def test_an_import_that_crashes_is_named_and_a_wrong_answer_is_no_error(row):
    crashed = row({"bigram.py": "import os\nos._exit(7)\n"})
    assert crashed.error == ("importing bigram.py exited: the worker process ended with exit code 7 "
                             "(os._exit or a crash)"), crashed.error
    wrong = row({"bigram.py": corpus.module_text("bigram", "nll_sum")})
    assert wrong.error == "" and 0 < wrong.scores["bigram"][0] < wrong.scores["bigram"][1]


def test_an_older_results_file_without_recorded_problems_still_gives_a_row(tmp_path):
    """results.json written before llmgrade recorded its problems: the output line is the error."""
    results = {"score": 0, "output": "bigram.zip could not be read", "tests": [
        {"name": "bigram: t", "score": 0, "max_score": 1, "status": "failed", "output": "x", "tags": ["bigram"]}]}
    path = tmp_path / "sid" / "results.json"
    path.parent.mkdir()
    path.write_text(json.dumps(results))
    assert gradebook.row_for("sid", path).error.startswith("bigram.zip could not be read")
