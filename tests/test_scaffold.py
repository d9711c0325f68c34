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
from grader.errors import UsageProblem
from grader.course.scaffold import new_stage

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


def test_the_readme_stage_table_is_what_sync_generates():
    """README.md's stage table is generated: edited by hand (or stale), this fails."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert sync.STAGE_TABLE_BEGIN in readme
    assert sync.with_stage_table(readme, sync.stage_table(ROOT)) == readme, "run `llmgrade sync`"
