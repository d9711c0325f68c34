"""`llmgrade new-stage` and `llmgrade sync` in a copy of the course: a new stage is files only,
and it grades as scaffolded (the reference full marks, the skeleton none, its corpus behaves)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.course import stages, sync
from grader.course.scaffold import new_stage
from grader.errors import UsageProblem

ROOT = stages.project_root()
KEEP_OUT = shutil.ignore_patterns(".git", ".venv", ".whl", "__pycache__", "*.egg-info", "corpus", "notebooks")


@pytest.fixture
def course(tmp_path):
    copy = tmp_path / "course"
    shutil.copytree(ROOT, copy, ignore=KEEP_OUT)
    return copy


def llmgrade(course: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLMGRADE_ROOT": str(course)}
    env.pop("LLMGRADE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "grader", *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_a_scaffolded_stage_grades_in_a_fresh_course(course):
    made = llmgrade(course, "new-stage", "toy_sum", "--title", "A toy sum")
    assert made.returncode == 0, made.stdout + made.stderr
    toy = [s for s in stages.discover(course) if s.name == "toy_sum"][0]
    assert toy.order == 9 and toy.title == "Stage 9 — A toy sum"
    assert toy.skeleton.exists() and "raise NotImplementedError" in toy.skeleton.read_text()
    assert (course / "assignments" / "toy_sum.ipynb").exists()
    readme = (course / "README.md").read_text()
    assert "| 9 | toy_sum: A toy sum | 2 | 3 | 1 | 1 / 1 |" in readme   # tests, points, public, corpus
    assert "| 8 | training:" in readme                                # the others are still there

    checked = llmgrade(course, "selfcheck", "--stage", "toy_sum", "--device", "cpu")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "3 / 3" in checked.stdout and "0 / 3" in checked.stdout

    corpus = subprocess.run([sys.executable, "-m", "grader.course.corpus", str(course / "tests" / "corpus"),
                             "--stage", "toy_sum", "--device", "cpu"], capture_output=True, text=True,
                            cwd=course, env={**os.environ, "LLMGRADE_ROOT": str(course)}, timeout=600)
    assert corpus.returncode == 0 and "2/2 entries behave" in corpus.stdout, corpus.stdout + corpus.stderr

    again = llmgrade(course, "sync")
    assert again.returncode == 0 and "everything generated is up to date" in again.stdout, again.stdout


STAGE_FIXTURES = '''"""toy_sum's fixtures: objects its tests build in the worker."""


class Scaler:
    def __init__(self, scale):
        self.scale = scale

    def __call__(self, x):
        return x * self.scale


FIXTURES = {"Scaler": Scaler}
'''

FIXTURE_TEST = '''import pytest
import torch

from grader.testing import build_fixture, expect_close


@pytest.mark.points(2)
def test_with_a_fixture_built_in_the_worker(student, device):
    """scaled_sum with the scale of a Scaler fixture built in the worker"""
    x = torch.arange(6.0, device=device).reshape(2, 3)
    remote, local = student.fixture("Scaler", 0.25), build_fixture("Scaler", [0.25], {})
    expect_close(remote(x), local(x), what="Scaler(0.25)(x)")
    expect_close(student.toy_sum.scaled_sum(x, remote.scale), local(x).sum(-1), what="scaled_sum(x, 0.25)")
'''


@pytest.mark.slow
def test_a_stage_declares_its_worker_fixtures_in_its_own_file(course):
    """A stage's fixtures are files of the stage (assignments/tests/fixtures_NAME.py): the template
    of the course being graded loads them, a hidden test builds one in the worker."""
    assert llmgrade(course, "new-stage", "toy_sum").returncode == 0
    (course / "assignments" / "tests" / "fixtures_toy_sum.py").write_text(STAGE_FIXTURES)
    (course / "autograder_tests" / "toy_sum" / "test_toy_sum_fixture.py").write_text(FIXTURE_TEST)
    checked = llmgrade(course, "selfcheck", "--stage", "toy_sum", "--device", "cpu")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "5 / 5" in checked.stdout and "0 / 5" in checked.stdout, checked.stdout


def test_new_stage_refuses_bad_names_and_existing_stages(course):
    for bad in ("Toy", "9toy", "toy-sum", ""):
        with pytest.raises(UsageProblem, match="is not a stage name"):
            new_stage(bad, course)
    with pytest.raises(UsageProblem, match="exists already"):
        new_stage("bigram", course)
    (course / "solutions" / "fresh.py").write_text("# mine\n")
    with pytest.raises(UsageProblem, match="not overwriting"):
        new_stage("fresh", course)
    assert (course / "solutions" / "fresh.py").read_text() == "# mine\n"
    assert not (course / "assignments" / "handouts" / "09-fresh.md").exists()


@pytest.mark.slow
def test_the_readme_stage_table_is_what_sync_generates():
    """README.md's stage table is generated: edited by hand (or stale), this fails."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert sync.STAGE_TABLE_BEGIN in readme
    assert sync.with_stage_table(readme, sync.stage_table(ROOT)) == readme, "run `llmgrade sync`"
