"""`llmgrade gradescope build`: the zip, unpacked as Gradescope does, grades a submission.

End to end: the zip is built with `python -m grader gradescope build --stage bigram`,
unpacked into a temporary AUTOGRADER_ROOT (`source/`), and its `run_autograder`
grades `submission/` with this Python environment (setup.sh is only syntax-checked:
it installs packages as root). The results are validated against Gradescope's schema.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from grader.course import corpus
from grader.course.stages import project_root
from grader.engine.results_json import stage_scores, validate
from procs import HANGING_BUILD_VOCAB

ROOT = project_root()
BROKEN_BIGRAM = corpus.module_text("bigram", "no_end_token")   # the end-of-word token is never counted


def run_grader(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def autograder_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gradescope") / "autograder.zip"
    run = run_grader("gradescope", "build", out, "--stage", "bigram")
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def unpack(zip_path: Path, root: Path) -> Path:
    """What Gradescope does: the zip into ROOT/source (zipfile drops modes: restore the x bits)."""
    source = root / "source"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(source)
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if mode:
                os.chmod(source / info.filename, stat.S_IMODE(mode))
    return source


def run_autograder(root: Path, python: str = sys.executable, **more_env: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LLMGRADE_ROOT", "PYTHONPATH")}
    env.update(AUTOGRADER_ROOT=str(root), LLMGRADE_PYTHON=python, **more_env)
    run = subprocess.run(["bash", str(root / "source" / "run_autograder")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))
    validate(results)
    return results


def test_zip_layout(autograder_zip):
    with zipfile.ZipFile(autograder_zip) as zf:
        names = set(zf.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
        setup = zf.read("setup.sh").decode()
        runner = zf.read("run_autograder").decode()
    assert {"setup.sh", "run_autograder", "pyproject.toml", "README.md", "grader/cli.py",
            "solutions/bigram.py", "autograder_tests/bigram/test_bigram.py",
            "autograder_tests/bigram/data/names_heldout.txt", "datasets/names.txt",
            "assignments/handouts/02-bigram.md"} <= names
    assert not any(n.startswith(("autograder_tests/attention/", "tests/", "benchmarks/")) for n in names)
    assert not any("__pycache__" in n or n.startswith("datasets/build_") for n in names)
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111
    assert "https://download.pytorch.org/whl/cpu" in setup and "@" not in setup.replace("$@", "")
    assert "--stage bigram" in runner and "@STAGE_ARGS@" not in runner


def test_scripts_are_valid_bash(autograder_zip, tmp_path):
    source = unpack(autograder_zip, tmp_path)
    for script in ("setup.sh", "run_autograder"):
        check = subprocess.run(["bash", "-n", str(source / script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


@pytest.mark.slow
def test_run_autograder_grades_a_reference_and_a_broken_submission(autograder_zip, tmp_path):
    source = unpack(autograder_zip, tmp_path)
    submission = tmp_path / "submission"
    submission.mkdir()
    shutil.copy(source / "solutions" / "bigram.py", submission / "bigram.py")
    results = run_autograder(tmp_path)
    score, maximum = stage_scores(results)["bigram"]
    assert maximum > 0 and score == maximum and results["score"] == maximum
    assert all(t["name"].startswith("bigram: ") for t in results["tests"])   # only the chosen stage

    (submission / "bigram.py").write_text(BROKEN_BIGRAM)
    results = run_autograder(tmp_path)
    assert results["score"] < maximum
    failed = " ".join(t["output"] for t in results["tests"] if t["status"] == "failed")
    assert "end-of-word token is never counted" in failed, failed


@pytest.mark.slow
def test_run_autograder_keeps_to_its_time_budget(autograder_zip, tmp_path):
    """A submission whose every call hangs: no test starts after the budget, a grading that still
    runs at budget + 90 s is stopped, and either way the results are written, saying so."""
    unpack(autograder_zip, tmp_path)
    (tmp_path / "submission").mkdir()
    (tmp_path / "submission" / "bigram.py").write_text(HANGING_BUILD_VOCAB)
    started = time.monotonic()
    results = run_autograder(tmp_path, LLMGRADE_TIME_BUDGET="10")
    assert time.monotonic() - started < 10 + 90 + 60
    assert results["score"] == 0 and results["tests"]
    assert any(t["output"].startswith("not graded: the grading run's time budget ran out") for t in results["tests"])


def test_run_autograder_always_leaves_valid_results(autograder_zip, tmp_path):
    """No submission folder (the grader exits with an error), then no Python at all."""
    unpack(autograder_zip, tmp_path)
    results = run_autograder(tmp_path)
    assert results["score"] == 0 and results["tests"] == []
    assert "could not grade" in results["output"] and "does not exist" in results["output"]
    results = run_autograder(tmp_path, python=str(tmp_path / "no-such-python"))
    assert results["score"] == 0 and "could not start" in results["output"]


def test_build_states_the_container_it_was_measured_in(tmp_path):
    """The instructor learns the memory and time grading needs, and Gradescope's setting to change."""
    run = run_grader("gradescope", "build", tmp_path / "a.zip", "--stage", "bigram")
    assert run.returncode == 0, run.stderr
    text = " ".join(run.stdout.split())
    assert "measured" in text and "peak" in text and "0.5 vCPU / 768 MB" in text, text
    assert "Gradescope's settings" in text, text


def test_torch_options_reach_setup(tmp_path):
    out = tmp_path / "cuda.zip"
    run = run_grader("gradescope", "build", out, "--stage", "bigram", "--torch-version", "2.5.1",
                     "--torch-index", "https://download.pytorch.org/whl/cu124")
    assert run.returncode == 0, run.stderr
    setup = zipfile.ZipFile(out).read("setup.sh").decode()
    assert '"https://download.pytorch.org/whl/cu124" "torch==2.5.1"' in setup


@pytest.mark.parametrize("args, message", [
    (["build", "{tmp}/autograder.tar"], "does not end in .zip"),
    (["build", "{tmp}/a.zip", "--stage", "nope"], "unknown stage 'nope'"),
    (["build", "{tmp}/a.zip", "--torch-index", "cu124"], "is not a URL"),
    (["build"], "Missing argument 'OUT.zip'"),
])
def test_bad_arguments_are_one_clear_line(tmp_path, args, message):
    run = run_grader("gradescope", *[a.format(tmp=tmp_path) for a in args])
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert message in run.stderr and "Traceback" not in run.stderr and lines[-1].startswith("Error:"), run.stderr
    assert not (tmp_path / "a.zip").exists()


def test_help_shows_an_example():
    for args in (["gradescope"], ["gradescope", "build"]):
        run = run_grader(*args, "--help")
        assert run.returncode == 0 and "Example: llmgrade gradescope build" in run.stdout, run.stdout
