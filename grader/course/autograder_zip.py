"""Build the Gradescope autograder zip.

    names = build(Path("autograder.zip"), stage_names=["bigram"])

Gradescope unpacks the zip into /autograder/source, runs `setup.sh` there once
(as root, on its Ubuntu image) and `run_autograder` for every submission. The
zip holds, at its root:

    setup.sh, run_autograder       from grader/course/gradescope_files/, options filled in
    pyproject.toml, README.md      so `pip install /autograder/source` works
    grader/                        the framework
    solutions/                     every reference (later stages import earlier ones)
    autograder_tests/<stage>/      the hidden tests of the chosen stages, with their data
    assignments/handouts/          every handout (stages are discovered from them)
    assignments/tests/fixtures_*   the chosen stages' worker fixtures
    datasets/                      the data files the hidden tests read (not the build scripts)

`run_autograder` grades only the chosen stages (`--stage`), so a zip built for
some stages never reports the others as missing tests.
"""

from __future__ import annotations

import shlex
import zipfile
from importlib import metadata, resources
from pathlib import Path

from grader.course import stages
from grader.course.release import DATASET_SCRIPTS, course_files

CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
SCRIPTS = ("setup.sh", "run_autograder")
_EPOCH = (1980, 1, 1, 0, 0, 0)   # fixed timestamps: the same course gives the same zip


# Gradescope's default autograder container: 768 MB of memory, 0.5 vCPU, a 10-minute limit.
# `benchmarks/bench_container.py` grades the reference inside a cgroup of that size; update
# these figures (and README, "Gradescope") when grading changes. 8 stages, every process counted.
MEASURED = {"date": "2026-12-04", "stages": 8, "seconds": 61, "peak_mib": 633,
            "cpus": 0.5, "memory_mb": 768}


def container_note() -> str:
    """What the grading was measured with, for the instructor who sets up the autograder."""
    m = MEASURED
    return (f"measured ({m['date']}, benchmarks/bench_container.py): the reference's {m['stages']} stages "
            f"graded in {m['seconds']} s, peak {m['peak_mib']} MiB, in a {m['cpus']:g} vCPU / "
            f"{m['memory_mb']} MB container (Gradescope's default). A submission that needs more "
            "memory fails only the tests it was running; if your students' submissions are heavier "
            "(bigger models, more data), raise the autograder's memory and CPU in Gradescope's "
            "settings (1 GB or more).")


class GradescopeError(ValueError):
    """The zip cannot be built (a message for the instructor, one line)."""


def installed_torch() -> str:
    """The torch requirement to pin: the version installed here, where selfcheck ran."""
    try:
        return "torch==" + metadata.version("torch").split("+")[0]
    except metadata.PackageNotFoundError:
        return "torch"


def render(name: str, values: dict[str, str]) -> str:
    text = resources.files("grader.course").joinpath("gradescope_files").joinpath(name).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def plan(root: Path, chosen: list[stages.Stage]) -> dict[str, Path]:
    """{path in the zip: source file} for the course at `root` and the chosen stages."""
    missing = [str(p.relative_to(root)) for s in chosen for p in (s.solution, s.hidden_tests) if not p.exists()]
    if missing:
        raise GradescopeError(f"{missing[0]} is missing: build the autograder from the course "
                              "repository (a student bundle has no solutions or hidden tests)")
    folders = [root / "grader", root / "solutions", root / "assignments" / "handouts"]
    folders += [s.hidden_tests for s in chosen]
    files = {p.relative_to(root).as_posix(): p for folder in folders for p in course_files(folder)}
    files.update({s.worker_fixtures.relative_to(root).as_posix(): s.worker_fixtures for s in chosen
                  if s.worker_fixtures.is_file()})
    hidden_top = root / "autograder_tests"
    files.update({p.relative_to(root).as_posix(): p for p in sorted(hidden_top.glob("*")) if p.is_file()})
    files.update({p.relative_to(root).as_posix(): p for p in course_files(root / "datasets")
                  if not DATASET_SCRIPTS.match(p.name)})
    for name in ("pyproject.toml", "README.md"):
        if not (root / name).is_file():
            raise GradescopeError(f"{root / name} is missing: `pip install` of the autograder needs it")
        files[name] = root / name
    return files


def build(out_zip: Path, stage_names: list[str] | tuple[str, ...] = (), *,
          torch_index: str = CPU_TORCH_INDEX, torch_requirement: str | None = None,
          root: Path | None = None) -> list[str]:
    """Write the autograder zip; returns the names it holds."""
    root = Path(root or stages.project_root()).resolve()
    chosen = stages.select(list(stage_names), root)
    files = plan(root, chosen)
    stage_args = " ".join(f"--stage {shlex.quote(s.name)}" for s in chosen) if stage_names else ""
    scripts = {
        "setup.sh": render("setup.sh", {"TORCH_INDEX": torch_index,
                                        "TORCH_REQUIREMENT": torch_requirement or installed_torch()}),
        "run_autograder": render("run_autograder", {"STAGE_ARGS": stage_args}),
    }
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out_zip, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in scripts.items():
            _write(zf, name, text.encode("utf-8"), executable=True)
        for name, path in sorted(files.items()):
            _write(zf, name, path.read_bytes(), executable=False)
    return [*scripts, *sorted(files)]


def _write(zf: zipfile.ZipFile, name: str, data: bytes, executable: bool) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100755 if executable else 0o100644) << 16
    zf.writestr(info, data)
