"""`llmgrade check` and `llmgrade submit`, end to end from the command line, on the bigram stage.

Each test runs the command line in a fresh folder, the way a student does in their
working copy: a correct one, a broken one (syntax error), a notebook one, one with
stages missing. The exit-code tests start `python -m grader ...` as a student does; the
others call the same entry point in this process (a fresh interpreter costs two torch
imports, its own and its worker template's, about 3 s of CPU a call).
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grader.course import notebook_build, stages

ROOT = Path(__file__).resolve().parent.parent
BIGRAM = stages.select(["bigram"], ROOT)[0]
BROKEN = "import torch\n\n\ndef build_vocab(words)\n    return {}, {}\n"


def llmgrade(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LLMGRADE_DEBUG"}
    return subprocess.run([sys.executable, "-m", "grader", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def here(capsys, monkeypatch):
    """The same entry point in this process: here("check", "bigram", cwd=folder) gives its exit
    code and output (capsys) without an interpreter's start."""
    from grader.cli import main

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        monkeypatch.delenv("LLMGRADE_DEBUG", raising=False)
        monkeypatch.setattr(sys, "argv", ["llmgrade", *args])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)
    return run


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.fixture
def correct(tmp_path) -> Path:
    """A working copy with the reference bigram.py, a helper it imports, and things that must not be packed."""
    folder = tmp_path / "correct"
    folder.mkdir()
    (folder / "bigram.py").write_text(BIGRAM.solution.read_text() + "\nfrom mytools import HELPER  # noqa\n")
    (folder / "mytools.py").write_text("HELPER = 1\n")
    (folder / "names.txt").write_text("emma\nolivia\n")
    (folder / "scratch.py").write_text("print('not imported by any stage')\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "bigram.cpython-311.pyc").write_bytes(b"\0")
    return folder


@pytest.fixture
def broken(tmp_path) -> Path:
    """bigram.py has a syntax error; sampling.py imports a module that is not there."""
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "bigram.py").write_text(BROKEN)
    (folder / "sampling.py").write_text("import torch\nfrom helpers_gone import thing\n")
    return folder


@pytest.fixture
def notebook(tmp_path) -> Path:
    """A working copy holding only bigram.ipynb: the reference's code in the stage notebook's layout."""
    folder = tmp_path / "notebook"
    folder.mkdir()
    (folder / "bigram.ipynb").write_text(notebook_build.notebook_text(
        BIGRAM.solution.read_text(), BIGRAM.handout.read_text(), "bigram"))
    return folder


@pytest.mark.slow
def test_check_a_correct_stage_prints_full_marks_and_exits_0(correct):
    result = llmgrade("check", "bigram", "--device", "cpu", cwd=correct)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bigram" in result.stdout and "11 / 11" in result.stdout
    assert "All public tests passed" in result.stdout and "✗" not in result.stdout


@pytest.mark.slow
def test_check_a_broken_stage_says_why_once_and_exits_1(broken):
    result = llmgrade("check", "bigram", "--path", str(broken), "--device", "cpu", cwd=broken.parent)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 / 11" in result.stdout
    assert "SyntaxError" in result.stdout and "line 4" in result.stdout
    assert result.stdout.count("SyntaxError") == 1          # one cause, said once
    assert "Traceback" not in result.stdout and "pytest" not in result.stdout


@pytest.mark.slow
def test_check_the_skeleton_lists_each_failure_in_a_line_or_two(tmp_path, here):
    (tmp_path / "bigram.py").write_text(BIGRAM.skeleton.read_text())
    result = here("check", "bigram", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("✗ bigram: ")]
    assert len(failures) == 11
    assert "bigram.nll(...) is not implemented yet" in result.stdout


@pytest.mark.slow
def test_check_grades_a_notebook(notebook, here):
    result = here("check", "bigram", "--device", "cpu", cwd=notebook)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "11 / 11" in result.stdout and "bigram.ipynb: graded its exported cells" in result.stdout


def test_check_bad_arguments_are_one_line(tmp_path, here):
    def run(*args):
        return here(*args, cwd=tmp_path)
    assert "unknown stage 'bigrams'" in one_line_error(run("check", "bigrams"))
    assert "no stage module" in one_line_error(run("check"))
    assert "'nowhere' does not exist" in one_line_error(run("check", "--path", "nowhere"))


@pytest.mark.slow
def test_submit_packs_only_what_is_graded_and_warns_about_missing_stages(correct, tmp_path, here):
    out = tmp_path / "out" / "submission.zip"
    result = here("submit", "--out", str(out), cwd=correct)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "missing stages" in result.stdout and "tokenizer" in result.stdout and "training" in result.stdout
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["bigram.py", "mytools.py"]
        assert zf.read("bigram.py") == (correct / "bigram.py").read_bytes()


@pytest.mark.slow
def test_submit_refuses_broken_modules_and_writes_nothing(broken, here):
    result = here("submit", cwd=broken)
    assert result.returncode == 1
    assert "bigram.py, line 4: syntax error" in result.stdout
    assert "importing sampling.py raised ModuleNotFoundError" in result.stdout and "helpers_gone" in result.stdout
    assert "nothing was written" in one_line_error(result)
    assert not (broken / "submission.zip").exists()
    forced = here("submit", "--force", cwd=broken)
    assert forced.returncode == 0 and (broken / "submission.zip").exists()


@pytest.mark.slow
def test_submit_packs_a_notebook(notebook, tmp_path, here):
    result = here("submit", "--path", str(notebook), "--out", str(tmp_path / "nb.zip"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(tmp_path / "nb.zip") as zf:
        assert zf.namelist() == ["bigram.ipynb"]


def test_submit_refuses_an_invalid_notebook(tmp_path, here):
    (tmp_path / "bigram.ipynb").write_text('{"cells": [')
    result = here("submit", cwd=tmp_path)
    assert result.returncode == 1 and "bigram.ipynb is not a valid Jupyter notebook" in result.stdout


def test_submit_bad_arguments_are_one_line(tmp_path, correct, here):
    run = here
    assert "does not end in .zip" in one_line_error(run("submit", "--out", "x.txt", cwd=correct))
    (tmp_path / "empty").mkdir()
    assert "no stage module" in one_line_error(run("submit", cwd=tmp_path / "empty"))
    assert "--frobnicate" in one_line_error(run("submit", "--frobnicate", cwd=correct))


@pytest.mark.slow
def test_submit_from_the_bundle_root_finds_assignments_and_flags_untouched_skeletons(tmp_path, here):
    """Run where `check` works (the bundle's root), submit packs `assignments/`; a skeleton that was
    never edited is "not started", a half-done one says how many functions are left, never "ok"."""
    work = tmp_path / "assignments"
    work.mkdir()
    skeleton = (ROOT / "assignments" / "bigram.py").read_text()
    (work / "bigram.py").write_text(skeleton)
    sampling = (ROOT / "assignments" / "sampling.py").read_text()   # apply_temperature is done, the rest not
    (work / "sampling.py").write_text(sampling.replace("raise NotImplementedError", "return logits / temperature", 1))
    result = here("submit", "--out", str(tmp_path / "s.zip"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"your stage modules are in {work.name}" in result.stdout
    assert "not started" in result.stdout and "functions left" in result.stdout
    assert "build_vocab" in result.stdout and "still raise NotImplementedError" in result.stdout
    with zipfile.ZipFile(tmp_path / "s.zip") as zf:
        assert sorted(zf.namelist()) == ["bigram.py", "sampling.py"]


@pytest.mark.parametrize("name", ["check", "submit"])
def test_help_shows_an_example(name, tmp_path, here):
    result = here(name, "--help", cwd=tmp_path)
    assert result.returncode == 0 and f"Example: llmgrade {name} " in result.stdout


@pytest.mark.slow
def test_check_debug_runs_the_public_tests_in_process_where_breakpoint_stops(tmp_path):
    """`check --debug`: breakpoint() in the student's code reaches this process's debugger hook
    (PYTHONBREAKPOINT, as pdb would), and the output says the run grades nothing."""
    work = tmp_path / "work"
    work.mkdir()
    source = (ROOT / "solutions" / "bigram.py").read_text()
    source = source.replace("def build_vocab(words", "def build_vocab(*args, **kwargs):\n"
                            "    breakpoint()\n    return _build_vocab(*args, **kwargs)\n\n\ndef _build_vocab(words", 1)
    (work / "bigram.py").write_text(source)
    (work / "debughook.py").write_text("import os\n\ndef stop():\n"
                                       "    open(os.environ['HIT_FILE'], 'a').write(f'{os.getpid()}\\n')\n")
    hits = tmp_path / "hits.txt"
    env = {**os.environ, "PYTHONBREAKPOINT": "debughook.stop", "HIT_FILE": str(hits)}
    env.pop("LLMGRADE_DEBUG", None)
    run = subprocess.Popen([sys.executable, "-m", "grader", "check", "--debug", "bigram", "--path", str(work)],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = run.communicate(timeout=300)[0]
    assert run.returncode == 0, output
    text = " ".join(output.split())
    assert "debug mode:" in text and "grades nothing" in text and "nothing was graded" in text, text
    assert hits.exists() and set(hits.read_text().split()) == {str(run.pid)}   # in the check process itself
