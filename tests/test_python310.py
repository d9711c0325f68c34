"""The grader on Python 3.10, the oldest `requires-python` allows and Gradescope's default image's.

What runs here without a CPU torch for 3.10 (PyPI has only the CUDA build, 527 MB plus its
CUDA 13 nvidia-* wheels, and download.pytorch.org is not reachable from CI):

- every source the grading venv runs (grader/, the hidden tests, the references, the skeletons)
  compiles under 3.10;
- (slow) a fresh 3.10 venv gets the course package as setup.sh installs it (a built wheel, not
  editable) with its declared dependencies except torch. Then every `grader` module imports,
  with `torch` replaced by a MagicMock, so a 3.11-only name (tomllib, typing.Self,
  enum.StrEnum, datetime.UTC, ...) fails at import; every command's --help renders;
  `llmgrade gradebook` merges results.json files the 3.11 grader wrote into the same CSV;
- (slow) with a small stand-in `torch` package in that venv, the tokenizer stage (its hidden
  tests and reference use no torch) is graded for real under 3.10: template, forked workers,
  every isolation layer the machine gives, the pytest plugin, results.json. The reference
  gets full marks, the skeleton none. The stages that compute with tensors stay unchecked.

Skipped, with the reason, when no python3.10 is found (PATH or pyenv) or the venv's
dependencies cannot be installed (no package index).
"""

import csv
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.course.stages import project_root
from grader.engine.results_json import stage_scores

ROOT = project_root()
SOURCES = ("grader", "autograder_tests", "solutions", "assignments")

COMPILE_ALL = r"""
import pathlib, sys
bad = []
for folder in sys.argv[1:]:
    for path in sorted(pathlib.Path(folder).rglob("*.py")):
        try:
            compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        except SyntaxError as error:
            bad.append(f"{path}:{error.lineno}: {error.msg}")
print("\n".join(bad) or "all compiled")
sys.exit(1 if bad else 0)
"""

# Run by the 3.10 venv: `torch` and `torch.*` become MagicMocks, then every grader module is imported.
IMPORT_ALL = r"""
import importlib, importlib.abc, importlib.machinery, pkgutil, sys
from unittest import mock

class TorchStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
    def create_module(self, spec):
        module = mock.MagicMock(name=spec.name)
        module.__path__, module.__spec__, module.__name__ = [], spec, spec.name
        return module
    def exec_module(self, module):
        pass

sys.meta_path.insert(0, TorchStub())
import grader
print("grader from", grader.__file__)
names = ["grader"] + [m.name for m in pkgutil.walk_packages(grader.__path__, "grader.")
                      if not m.name.endswith("__main__")]   # __main__ runs the command line
failed = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception as error:
        failed.append(f"{name}: {type(error).__name__}: {error}")
print(f"{len(names) - len(failed)} of {len(names)} modules imported")
print("\n".join(failed))
if failed:
    sys.exit(1)
from grader.cli import cli
for command in [None, *cli.list_commands(None)]:
    cli([command, "--help"] if command else ["--help"], standalone_mode=False, prog_name="llmgrade")
if len(sys.argv) > 1:   # gradebook DIR --out CSV
    sys.argv = ["llmgrade", *sys.argv[1:]]
    from grader.cli import main
    main()
"""

# A stand-in `torch` for the venv: every attribute is a class (isinstance and subclassing
# work), no CUDA. Enough for the grader's torch-free paths (the tokenizer stage), nothing more.
TORCH_STANDIN = r"""
import sys, types

class _Auto(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        made = _Auto(name, (_Obj,), {})
        setattr(cls, name, made)
        return made
    def __or__(cls, other):
        return cls
    __ror__ = __or__

class _Obj(metaclass=_Auto):
    def __init__(self, *args, **kwargs): pass
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Auto(name, (_Obj,), {})
    def __call__(self, *args, **kwargs): return _Obj()
    def __enter__(self): return self
    def __exit__(self, *exc): return False

class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        made = _Auto(name, (_Obj,), {"__module__": self.__name__})
        setattr(self, name, made)
        return made

sys.modules[__name__].__class__ = _Module
__path__ = []
__version__ = "0.0+standin"
for _name in ("nn", "nn.functional", "nn.modules", "nn.modules.loss", "cuda", "optim", "optim.optimizer",
              "library", "special", "_C", "ops", "backends", "utils", "random", "autograd"):
    _module = _Module(f"torch.{_name}")
    _module.__path__ = []
    sys.modules[_module.__name__] = _module
    _parent, _, _leaf = _module.__name__.rpartition(".")
    setattr(sys.modules[_parent], _leaf, _module)
cuda.is_available = lambda: False
cuda.is_initialized = lambda: False
cuda.device_count = lambda: 0
is_grad_enabled = lambda: True
is_autocast_enabled = lambda *args: False
get_num_threads = lambda: 1
set_num_threads = lambda n: None
manual_seed = lambda seed: None
no_grad = _Obj
"""


def find_python310() -> str | None:
    """A python3.10 that really runs (a pyenv shim on PATH may name one it cannot start)."""
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for candidate in [shutil.which("python3.10"), *sorted(glob.glob(f"{pyenv}/versions/3.10*/bin/python3.10"))]:
        if candidate:
            probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                                   capture_output=True, text=True, timeout=60)
            if probe.stdout.strip() == "(3, 10)":
                return candidate
    return None


@pytest.fixture(scope="module")
def python310():
    found = find_python310()
    if not found:
        pytest.skip("no python3.10 on PATH or under ~/.pyenv/versions/3.10*/ (e.g. `pyenv install 3.10`)")
    return found


def test_every_source_the_grading_venv_runs_compiles_under_310(python310):
    run = subprocess.run([python310, "-c", COMPILE_ALL, *SOURCES], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def declared_dependencies_but_torch() -> list[str]:
    try:
        import tomllib
    except ModuleNotFoundError:   # this test's own interpreter is 3.10
        pytest.skip("reading pyproject.toml needs tomllib (Python 3.11+) in the interpreter running pytest")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [d for d in project["dependencies"] if not d.replace(" ", "").startswith(("torch>", "torch=", "torch<"))
            and d.strip() != "torch"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def venv310(python310, tmp_path_factory):
    """A 3.10 venv with the course package (a built wheel) and its dependencies but torch."""
    venv = tmp_path_factory.mktemp("py310") / "venv"
    subprocess.run([python310, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q"]
    deps = subprocess.run([*pip, *declared_dependencies_but_torch()], capture_output=True, text=True, timeout=600)
    if deps.returncode != 0:
        pytest.skip("the 3.10 venv could not install the dependencies (no package index?): "
                    + (deps.stderr.strip().splitlines() or ["?"])[-1])
    package = subprocess.run([*pip, "--no-deps", str(ROOT)], capture_output=True, text=True, timeout=600)
    assert package.returncode == 0, package.stdout + package.stderr
    return venv


def python_in(venv: Path, *args, cwd: Path, timeout=300) -> subprocess.CompletedProcess:
    """Run the venv's python from CWD (outside the source tree, so `grader` is the installed
    wheel), with LLMGRADE_ROOT naming the course as run_autograder does."""
    return subprocess.run([str(venv / "bin/python"), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, LLMGRADE_ROOT=str(ROOT)))


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.xdist_group("venv310")   # one process builds the module's venv once
def test_every_module_imports_and_a_gradebook_merges_under_310(venv310, tmp_path):
    subs, graded = tmp_path / "subs", tmp_path / "graded"
    for name in ("ada", "eve"):
        (subs / name).mkdir(parents=True)
    shutil.copy(ROOT / "solutions/bigram.py", subs / "ada/bigram.py")
    (subs / "eve/bigram.py").write_text("def bigram_counts(:\n")
    graded311 = subprocess.run([sys.executable, "-m", "grader", "grade-all", str(subs), "--out", str(graded),
                                "--stage", "bigram", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert graded311.returncode == 0, graded311.stdout + graded311.stderr

    run = python_in(venv310, "-c", IMPORT_ALL, "gradebook", graded, "--out", tmp_path / "merged310.csv", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"grader from {venv310}/lib/python3.10/site-packages/grader/__init__.py" in run.stdout
    assert "Usage: llmgrade grade-all" in run.stdout and "2 students (1 with an error)" in run.stdout
    assert read_csv(tmp_path / "merged310.csv") == read_csv(graded / "gradebook.csv")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.xdist_group("venv310")   # one process builds the module's venv once
def test_the_tokenizer_stage_grades_under_310(venv310, tmp_path):
    standin = venv310 / "lib/python3.10/site-packages/torch"
    standin.mkdir()
    try:
        (standin / "__init__.py").write_text(TORCH_STANDIN)
        scores = {}
        for name in ("solutions", "assignments"):
            out = tmp_path / f"{name}.json"
            run = python_in(venv310, "-m", "grader", "grade", ROOT / name, "--stage", "tokenizer", "--device", "cpu",
                            "--out", out, cwd=tmp_path)
            assert run.returncode == 0, run.stdout + run.stderr
            results = json.loads(out.read_text())
            assert results["tests"] and "Graded at isolation" in results["output"], results["output"]
            scores[name] = (results["score"], sum(test["max_score"] for test in results["tests"]))
    finally:
        shutil.rmtree(standin)   # the import test must see no torch at all
    assert scores["solutions"][0] == scores["solutions"][1] > 0, scores
    assert scores["assignments"][0] == 0, scores


HEAVY = os.environ.get("LLMGRADE_HEAVY") == "1"


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.skipif(not HEAVY, reason="installs torch for Python 3.10 the way the zip's setup.sh does "
                    "(PyPI has only the CUDA build for 3.10 on Linux: 4.6 GB, 1-4 min): LLMGRADE_HEAVY=1 runs it")
def test_the_autograder_zip_installs_and_grades_every_stage_under_310(python310, tmp_path):
    """Gradescope's image end to end, with real torch: setup.sh (apt-get stubbed; `python3` is
    3.10) makes the venv, installs torch and the course package; run_autograder grades the
    reference of every stage to full marks. LLMGRADE_TORCH_INDEX: the index setup.sh installs
    torch from (default PyPI, where 3.10 has a CUDA build that also runs on a CPU)."""
    from test_gradescope import run_autograder, unpack

    index = os.environ.get("LLMGRADE_TORCH_INDEX", "https://pypi.org/simple")
    zip_path = tmp_path / "autograder.zip"
    build = subprocess.run([sys.executable, "-m", "grader", "gradescope", "build", str(zip_path),
                            "--torch-index", index], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert build.returncode == 0, build.stdout + build.stderr
    source = unpack(zip_path, tmp_path)
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "apt-get").write_text("#!/bin/sh\nexit 0\n")   # the image's python3 is the 3.10 below
    (shims / "apt-get").chmod(0o755)
    (shims / "python3").symlink_to(python310)
    env = {k: v for k, v in os.environ.items() if k not in ("LLMGRADE_ROOT", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(AUTOGRADER_ROOT=str(tmp_path), PATH=f"{shims}:{env['PATH']}")
    setup = subprocess.run(["bash", str(source / "setup.sh")], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=2000)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    venv_python = tmp_path / "llmgrade-venv" / "bin" / "python"
    version = subprocess.run([str(venv_python), "-c", "import sys, torch; print(sys.version_info[:2], torch.__version__)"],
                             capture_output=True, text=True, timeout=300)
    assert version.stdout.startswith("(3, 10)"), version.stdout + version.stderr
    (tmp_path / "submission").mkdir()
    for reference in (ROOT / "solutions").glob("*.py"):
        shutil.copy(reference, tmp_path / "submission" / reference.name)
    results = run_autograder(tmp_path, python=str(venv_python))
    scores = stage_scores(results)
    assert len(scores) == 8 and all(score == maximum > 0 for score, maximum in scores.values()), scores
