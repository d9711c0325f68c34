"""`llmgrade release`: the student bundle holds no solution and no hidden test, and `check` works in it.

End to end: the bundle is built with `python -m grader release`, and the public
tests run inside it with `python -m grader check`, the grader imported from the
bundle itself (PYTHONPATH=bundle, cwd=bundle), not from this checkout.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.course.stages import project_root

ROOT = project_root()
FORBIDDEN_DIRS = ("solutions/", "autograder_tests/", "tests/", "benchmarks/", ".ci/")
# Generic lines the reference GPT shares with the grader's own TinyGPT fixture (torch built-ins,
# shipped in assignments/tests/fixtures_training.py because the training tests build it in the worker); the
# contract spells out the same wiring. Judged harmless; any other shared line fails the proof.
SHARED_WITH_FIXTURES = {
    "self.block_size = block_size",
    "self.lm_head = nn.Linear(d_model, vocab_size, bias=False)",
    "logits = self.lm_head(self.ln_f(x))",
}


def run_grader(*args, cwd=None, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def in_bundle_env(bundle: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LLMGRADE_ROOT", "PYTHONPATH")}
    env["PYTHONPATH"] = str(bundle)
    return env


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release") / "bundle"
    run = run_grader("release", out)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def bundle_files(bundle: Path) -> list[str]:
    return sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())


def solution_lines() -> set[str]:
    """Distinctive lines of every reference's solution blocks (not also in what students get)."""
    given = "\n".join(p.read_text(encoding="utf-8") for p in [
        *(ROOT / "assignments").glob("*.py"), *(ROOT / "assignments" / "handouts").glob("*.md"),
        *(ROOT / "assignments" / "tests").glob("*.py")])
    lines, inside = set(), False
    for path in (ROOT / "solutions").glob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if "END SOLUTION" in line:
                inside = False
            elif "BEGIN SOLUTION" in line:
                inside = True
            elif (inside and len(line.strip()) > 25 and line.strip() not in given
                  and line.strip() not in SHARED_WITH_FIXTURES):
                lines.add(line.strip())
    return lines


def hidden_test_names() -> set[str]:
    public = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "assignments" / "tests").glob("*.py"))
    names = set()
    for path in (ROOT / "autograder_tests").rglob("*.py"):
        names |= set(re.findall(r"^\s*def (test_\w+)", path.read_text(encoding="utf-8"), re.M))
    return {n for n in names if not re.search(rf"\b{n}\b", public)}


def leaks(bundle: Path) -> list[str]:
    """What in `bundle` students must not get: forbidden folders, solution lines, hidden test names."""
    found = []
    secrets = re.compile("|".join(map(re.escape, sorted(solution_lines(), key=len, reverse=True))))
    names = re.compile(r"\b(?:%s)\b" % "|".join(sorted(hidden_test_names())))
    for path in bundle_files(bundle):
        if path.startswith(FORBIDDEN_DIRS) or re.match(r"datasets/build_.*\.py$", path):
            found.append(f"{path} is there")
        text = (bundle / path).read_text(encoding="utf-8", errors="replace")
        found += [f"{path} holds solution code: {m[0]!r}" for m in secrets.finditer(text)]
        found += [f"{path} names a hidden test: {m[0]}" for m in names.finditer(text)]
    return found


@pytest.mark.slow
def test_bundle_has_no_solution_and_no_hidden_test(bundle):
    files = bundle_files(bundle)
    assert "pyproject.toml" in files and "README.md" in files and "grader/engine/checks.py" in files
    assert "assignments/bigram.py" in files and "assignments/tests/test_bigram.py" in files
    assert "assignments/handouts/02-bigram.md" in files and "datasets/names.txt" in files
    assert len(solution_lines()) > 50 and len(hidden_test_names()) > 50   # the scan has something to find
    assert leaks(bundle) == []
    hidden_data = {p.name for p in (ROOT / "autograder_tests").rglob("data/*") if p.is_file()}
    readme = (bundle / "datasets" / "README.md").read_text(encoding="utf-8")
    assert hidden_data and not any(name in readme for name in hidden_data)
    assert "Licence" in readme   # the credits of the data students get are kept


def test_the_scan_finds_planted_leaks(tmp_path):
    """The proof can fail: a reference, a hidden test or a forbidden folder in a bundle is found."""
    shutil.copy(ROOT / "solutions" / "bigram.py", tmp_path / "mine.py")
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "autograder_tests" / "bigram" / "test_bigram.py", tmp_path / "tests" / "x.py")
    found = leaks(tmp_path)
    assert any(f.startswith("mine.py holds solution code") for f in found)
    assert any(f.startswith("tests/x.py names a hidden test") for f in found)
    assert "tests/x.py is there" in found


@pytest.mark.slow
def test_check_runs_the_public_tests_inside_the_bundle(bundle, tmp_path):
    env = in_bundle_env(bundle)
    skeleton = run_grader("check", "bigram", "--path", "assignments", cwd=bundle, env=env)
    assert skeleton.returncode == 1, skeleton.stdout + skeleton.stderr   # check: 1 when a test failed
    assert "0 / 11" in skeleton.stdout and "not implemented" in skeleton.stdout, skeleton.stdout
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "solutions" / "bigram.py", work / "bigram.py")
    solved = run_grader("check", "bigram", "--path", work, cwd=bundle, env=env)
    assert solved.returncode == 0 and "11 / 11" in solved.stdout, solved.stdout + solved.stderr


@pytest.mark.slow
def test_grade_stops_with_one_line_in_the_bundle(bundle, tmp_path):
    """selfcheck goes through the same grade() and stops the same way (checked by hand)."""
    run = run_grader("grade", "assignments", "--stage", "bigram", "--out", tmp_path / "r.json",
                     cwd=bundle, env=in_bundle_env(bundle))
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [
        "Error: hidden tests are not part of the student bundle; `llmgrade check` runs the public tests"]
    assert not (tmp_path / "r.json").exists()


def test_release_of_some_stages(tmp_path):
    out = tmp_path / "two"
    run = run_grader("release", out, "--stage", "tokenizer", "--stage", "bigram")
    assert run.returncode == 0, run.stderr
    files = bundle_files(out)
    assert "assignments/bigram.py" in files and "assignments/tokenizer.py" in files
    assert not any("attention" in f for f in files if f.startswith("assignments/"))
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "assignments/bigram.py" in readme and "attention" not in readme


@pytest.mark.parametrize("args, message", [
    (["{existing}"], "already exists and is not an empty folder"),
    (["{tmp}/new", "--stage", "nope"], "unknown stage 'nope'"),
    ([str(ROOT / "assignments" / "out")], "inside the course's own folders"),
])
def test_bad_arguments_are_one_clear_line(tmp_path, args, message):
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "x.txt").write_text("x")
    values = dict(tmp=tmp_path, existing=tmp_path / "existing")
    run = run_grader("release", *[a.format(**values) for a in args])
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], run.stderr
    assert not (ROOT / "assignments" / "out").exists()


def test_help_shows_an_example():
    run = run_grader("release", "--help")
    assert run.returncode == 0 and "Example: llmgrade release" in run.stdout


def test_notebooks_have_a_folder_of_their_own(bundle):
    """A notebook next to an untouched <stage>.py would be graded as the .py: they live apart."""
    files = bundle_files(bundle)
    assert "notebooks/bigram.ipynb" in files and "assignments/bigram.py" in files
    assert not [f for f in files if f.startswith("assignments/") and f.endswith(".ipynb")]


def test_the_license_is_an_spdx_expression():
    """setuptools deprecates the `license = {text = ...}` table (builds fail after 2027-02-18);
    PEP 639's SPDX string needs setuptools >= 77 in the build requirements."""
    import tomllib
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert config["project"]["license"] == "MIT"
    [setuptools] = [r for r in config["build-system"]["requires"] if r.startswith("setuptools")]
    minimum = re.fullmatch(r"setuptools>=(\d+).*", setuptools)
    assert minimum and int(minimum[1]) >= 77, setuptools


def test_the_student_readme_installs_cpu_torch_first(bundle):
    """On Linux `pip install -e .` alone pulls the multi-GB CUDA build of torch: the bundle's set-up
    installs the CPU build first and says how to get the GPU one."""
    readme = (bundle / "README.md").read_text(encoding="utf-8")
    setup = readme[readme.index("## Set-up"):readme.index("## The stages")]
    cpu = setup.index("pip install torch --index-url https://download.pytorch.org/whl/cpu")
    assert cpu < setup.index("pip install -e .")
    assert "5.5 GB" in setup and "183 MB" in setup and "--force-reinstall torch" in setup
