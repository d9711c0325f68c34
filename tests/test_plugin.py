"""The pytest plugin: points, names, devices, credit, visibility and feedback become results."""

import textwrap

import jsonschema
import pytest

from grader.engine import results_json
from grader.engine.grade import _run_pytest
from grader.engine.pytest_plugin import GradingSession
from grader.engine.submissions import Submission

SUITE = '''
import pytest
from grader.engine.checks import expect_close
import torch

@pytest.mark.points(2)
def test_device(device):
    """runs once per device"""

@pytest.mark.points(3)
@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    """case n={n}"""
    assert n == 1

@pytest.mark.visibility("after_published")
def test_credit(credit):
    """half credit"""
    credit.fraction = 0.5
    credit.message = "half of the target"

def test_check():
    """a tensor check"""
    expect_close(torch.zeros(2, 4), torch.zeros(2, 4, 1), what="f(x)")

def test_grader_bug():
    """a bug in the test itself"""
    {}["x"]

def test_missing(student):
    """a missing module"""
    student.demo.f()
'''


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    (root / "demo").mkdir()
    (root / "demo" / "test_demo.py").write_text(textwrap.dedent(SUITE))
    (root / "submission").mkdir()
    session = GradingSession(Submission(root / "submission"), devices=["cpu", "other"])
    _run_pytest([str(root / "demo")], session, test_timeout=60)
    return {r.name: r for r in session.records.values()}


def test_points_are_split_over_devices(records):
    assert records["demo: runs once per device [cpu]"].max_score == 1.0
    assert records["demo: runs once per device [other]"].max_score == 1.0


def test_parametrized_names_and_points(records):
    assert records["demo: case n=1"].score == 3.0
    failed = records["demo: case n=2"]
    assert failed.score == 0 and failed.feedback[0].startswith("check failed: assert")


def test_partial_credit_and_visibility(records):
    record = records["demo: half credit"]
    assert record.score == 0.5 and record.visibility == "after_published"
    assert "half of the target" in record.feedback


def test_feedback_says_what_differs(records):
    assert records["demo: a tensor check"].feedback == ["f(x): expected shape (2, 4, 1), got (2, 4)"]
    assert records["demo: a missing module"].feedback == ["demo.py is missing from your submission"]


def test_grader_bugs_are_flagged_not_blamed_on_the_student(records):
    record = records["demo: a bug in the test itself"]
    assert record.internal_error and "the grader could not check this result (KeyError" in record.feedback[0]


def test_results_follow_gradescope_schema(records):
    results = results_json.build(records.values(), stage_order={"demo": 3}, execution_time=1.0, output="x")
    assert results["score"] == 1 + 1 + 3 + 0.5
    assert [t["number"] for t in results["tests"]][:2] == ["3.1", "3.2"]
    assert all(t["tags"][0] == "demo" for t in results["tests"])
    assert results_json.grader_errors(results) == ["demo: a bug in the test itself"]   # tagged, for selfcheck
    assert results_json.stage_scores(results) == {"demo": (5.5, 12.0)}


@pytest.mark.parametrize("broken", [
    {"tests": [{"name": "x", "score": 1, "max_score": 1, "status": "ok"}]},
    {"tests": [{"name": "x", "score": -1, "max_score": 1, "status": "passed"}]},
    {"tests": [], "visibility": "sometimes"},
    {"tests": [], "leaderboard": [{"name": "loss"}]},
    {"score": 1},
])
def test_schema_rejects_what_gradescope_would(broken):
    with pytest.raises(jsonschema.ValidationError):
        results_json.validate(broken)


def test_selfcheck_verdicts_fail_a_stage_whose_hidden_test_crashed(records):
    from grader.commands.selfcheck import verdicts

    full = results_json.build(records.values(), stage_order={"demo": 1}, execution_time=1.0, output="")
    full["tests"] = [dict(t, score=t["max_score"]) for t in full["tests"]]   # full marks, yet one test crashed
    zero = dict(full, tests=[dict(t, score=0) for t in full["tests"]])
    (row,) = verdicts(full, zero)
    assert row.stage == "demo" and row.reference == row.maximum and row.skeleton == 0
    assert row.crashed and not row.ok
    clean = [dict(t, tags=["demo"]) for t in full["tests"]]
    assert verdicts(dict(full, tests=clean), dict(zero, tests=[dict(t, score=0) for t in clean]))[0].ok
