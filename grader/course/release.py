"""Build the student bundle: everything a student needs, nothing they must not see.

    files = build(Path("dist/student"), stage_names=["tokenizer", "bigram"])

The bundle is a folder a student installs with `pip install -e .` and works in:

    README.md                      generated: set-up, the stages, how to check and submit
    pyproject.toml                 the project's, so `pip install -e .` gives `llmgrade`
    grader/                        the framework (checks, remote, worker, plugin, commands)
    assignments/<stage>.py         skeletons
    notebooks/<stage>.ipynb        the same skeletons as notebooks, with the handout (when present):
                                   a folder of their own, so that a notebook is never graded
                                   next to an untouched <stage>.py
    assignments/handouts/          handouts
    assignments/tests/             public tests
    datasets/                      the students' data files, with a README of their sources

It never holds `solutions/`, `autograder_tests/` (hidden tests and hidden data),
the project's own `tests/` (its corpus holds buggy copies of the references),
`benchmarks/`, `.ci/`, or `datasets/build_*.py` (they write the hidden splits,
and their seeds would let anyone rebuild them). In the bundle, `check` runs the
public tests; `grade` and `selfcheck` stop with one line, since the hidden
tests are not there.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from grader.course import stages

SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache", ".git"}
SKIP_SUFFIXES = {".pyc", ".pyo"}
DATASET_SCRIPTS = re.compile(r"^build_.*\.py$")


class ReleaseError(ValueError):
    """The bundle cannot be built (a message for the instructor, one line)."""


def course_files(folder: Path) -> list[Path]:
    """Every file under `folder`, sorted, without caches, checkpoints and compiled files."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(folder).parts)
                  and p.suffix not in SKIP_SUFFIXES)


def _stage_of(name: str, all_stages: set[str]) -> str | None:
    """The stage a file of assignments/ belongs to (bigram.py, bigram.ipynb, test_bigram.py,
    fixtures_training.py, 02-bigram.md)."""
    stem = Path(name).stem
    for candidate in (stem, stem.removeprefix("test_"), stem.removeprefix("fixtures_"), re.sub(r"^\d+-", "", stem)):
        if candidate in all_stages:
            return candidate
    return None


def plan(root: Path, stage_names: list[str] | tuple[str, ...] = ()) -> dict[str, Path]:
    """{path in the bundle: source file} for the chosen stages (all when empty)."""
    chosen = {s.name for s in stages.select(list(stage_names), root)}
    every = {s.name for s in stages.discover(root)}
    files: dict[str, Path] = {}
    for path in course_files(root / "grader"):
        files[path.relative_to(root).as_posix()] = path
    for path in course_files(root / "assignments"):
        stage = _stage_of(path.name, every)
        if stage is None or stage in chosen:
            relative = path.relative_to(root).as_posix()
            if path.suffix == ".ipynb" and path.parent == root / "assignments":
                relative = f"notebooks/{path.name}"
            files[relative] = path
    for path in course_files(root / "datasets"):
        if not DATASET_SCRIPTS.match(path.name) and path.name != "README.md":
            files[path.relative_to(root).as_posix()] = path
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        raise ReleaseError(f"{pyproject} is missing: the bundle needs it for `pip install -e .`")
    files["pyproject.toml"] = pyproject
    return files


def build(out_dir: Path, stage_names: list[str] | tuple[str, ...] = (), root: Path | None = None) -> list[str]:
    """Write the student bundle into `out_dir` (absent or empty); returns its files, relative."""
    root = Path(root or stages.project_root()).resolve()
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ReleaseError(f"{out_dir} already exists and is not an empty folder")
    if out_dir == root or root in out_dir.parents and (out_dir.relative_to(root).parts[0]
                                                      in ("grader", "assignments", "datasets")):
        raise ReleaseError(f"{out_dir} is inside the course's own folders; choose a folder outside them")
    files = plan(root, stage_names)
    chosen = stages.select(list(stage_names), root)
    written = list(files) + ["README.md"]
    out_dir.mkdir(parents=True, exist_ok=True)
    for relative, source in files.items():
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    (out_dir / "README.md").write_text(student_readme(chosen, files), encoding="utf-8")
    datasets = [Path(r).name for r in files if r.startswith("datasets/")]
    if datasets:
        (out_dir / "datasets" / "README.md").write_text(
            datasets_readme(root / "datasets" / "README.md", datasets), encoding="utf-8")
        written.append("datasets/README.md")
    return sorted(written)


def student_readme(chosen: list[stages.Stage], files: dict[str, Path]) -> str:
    """The bundle's README: set-up, the stages in order, checking and submitting."""
    rows = []
    for stage in chosen:
        notebook = f"notebooks/{stage.name}.ipynb"
        work = f"`assignments/{stage.name}.py`" + (f" or `{notebook}`" if notebook in files else "")
        rows.append(f"| {stage.order} | {stage.title} | "
                    f"`assignments/handouts/{stage.handout.name}` | {work} |")
    submit = ("\nWhen you are done, pack your work for submission:\n\n"
              "```sh\nllmgrade submit --path assignments\n```\n"
              if "grader/commands/submit.py" in files else "")
    return f"""# How LLMs work: the assignments

You implement the pieces of a GPT in PyTorch, stage by stage. Each stage has a
handout to read and a module (or notebook) to complete; the public tests tell
you what is still wrong. The grader runs further, hidden tests on your
submission.

## Set-up

```sh
python3 -m venv .venv && . .venv/bin/activate
pip install torch --index-url https://download.pytorch.org/whl/cpu   # Linux: CPU-only torch first
pip install -e .          # the other dependencies and the `llmgrade` command
```

On Linux a plain `pip install torch` (or `pip install -e .` alone) takes the CUDA
build: about 5.5 GB in the environment. The CPU-only build is a 183 MB download and
about 0.9 GB installed (torch 2.13, measured 2026-12), and it is enough for every
stage (the training stage runs on a CPU too, only slower). On macOS and Windows, `pip install -e .` alone
already gives a CPU (or Apple-silicon) build.

For the training stage on an NVIDIA GPU, install the CUDA build instead, in the same
environment: `pip install --force-reinstall torch` (about 5.5 GB and several minutes).

Install with `-e` (or run the commands from this folder, or set
`LLMGRADE_ROOT` to it): `llmgrade` finds the handouts and the public tests
next to its own code.

## The stages

| # | stage | handout | your code |
|---|---|---|---|
{chr(10).join(rows)}

## Checking your work

```sh
llmgrade check bigram --path assignments     # the public tests of one stage
llmgrade check --path assignments            # every stage
```

Working in notebooks instead? Keep them in `notebooks/` and check that folder
(`llmgrade check --path notebooks`): only cells whose first line is `#| export`
are graded. Submit either `<stage>.py` or `<stage>.ipynb` for a stage, never both.

`check` runs your code in a separate process and prints a score table and, for
each failed test, what to fix. Passing every public test does not mean full
marks: the hidden tests check more cases.
{submit}"""


def datasets_readme(source: Path, names: list[str]) -> str:
    """The students' datasets/README.md: the rows of the course's table that describe their
    files, and the source and licence lines (never how the hidden splits were made)."""
    lines = source.read_text(encoding="utf-8").splitlines() if source.is_file() else []
    rows = [line for line in lines if line.startswith("| `datasets/")
            and any(f"`datasets/{name}`" in line for name in names)]
    credits, keep = [], False
    for line in lines:
        if line.startswith(("- Source:", "- Licence:", "- License:")):
            keep = True
        elif not line.startswith("  "):
            keep = False
        if keep:
            credits.append(line)
    table = ["| File | What it is | Lines | sha256 |", "|---|---|---|---|", *rows] if rows else []
    body = "\n".join(table) or "\n".join(f"- `datasets/{name}`" for name in sorted(names))
    return ("# Datasets\n\n" + body + "\n"
            + ("\n## Sources and licences\n\n" + "\n".join(credits) + "\n" if credits else ""))
