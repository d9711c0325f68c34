"""Read a submission (folder, zip, notebooks, single file) into a clean folder of modules.

Nothing here runs submission code. Whatever is wrong with the input becomes
a message: for the whole submission (a zip that cannot be read) or for one
module (a broken notebook), so the other stages are still graded.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from grader.notebooks import NotebookError, export_module

MAX_TOTAL_BYTES = 50 * 2**20
MAX_FILES = 2000
_SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", "__MACOSX", ".git"}


@dataclass
class Submission:
    root: Path                                        # the modules, as .py files
    problems: dict[str, str] = field(default_factory=dict)   # module name -> why it is unusable
    notes: list[str] = field(default_factory=list)           # worth telling, not errors

    def missing(self, modules: list[str]) -> list[str]:
        return [m for m in modules if m not in self.problems and not (self.root / f"{m}.py").is_file()]


def load(path: Path, modules: list[str], dest: Path) -> Submission:
    """Materialise the submission at `path` into the empty folder `dest`.

    `modules` are the stage module names (without .py) that notebooks may stand for.
    """
    path, dest = Path(path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    submission = Submission(dest)
    try:
        if path.is_dir():
            source = path
        elif path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path)):
            source = dest.parent / (dest.name + "-unzipped")
            _unzip(path, source)
        elif path.is_file() and path.suffix in (".py", ".ipynb"):
            source = dest.parent / (dest.name + "-single")
            source.mkdir()
            shutil.copy2(path, source / path.name)
        elif path.exists():
            raise SubmissionError(f"{path.name} is not a folder, a .zip, a .py file or a notebook")
        else:
            raise SubmissionError(f"{path} does not exist")
        source = _module_folder(source, modules, submission)
        _copy(source, dest, submission)
    except SubmissionError as exc:
        for module in modules:
            submission.problems[module] = str(exc)
        return submission
    for module in modules:
        _export_notebook(module, source, submission)
    return submission


class SubmissionError(ValueError):
    """The submission as a whole cannot be read."""


def _unzip(archive: Path, target: Path) -> None:
    target.mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > MAX_FILES:
                raise SubmissionError(f"the zip holds {len(members)} files (at most {MAX_FILES})")
            if sum(m.file_size for m in members) > MAX_TOTAL_BYTES:
                raise SubmissionError(f"the zip unpacks to more than {MAX_TOTAL_BYTES // 2**20} MiB")
            for member in members:
                name = PurePosixPath(member.filename.replace("\\", "/"))
                if name.is_absolute() or ".." in name.parts:
                    raise SubmissionError(f"the zip holds an unsafe path: {member.filename}")
                if stat.S_ISLNK(member.external_attr >> 16) or member.is_dir():
                    continue
                if _SKIP_DIRS & set(name.parts):
                    continue
                out = target.joinpath(*name.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, SubmissionError):
            raise
        raise SubmissionError(f"the zip could not be read ({exc})") from None


def _module_folder(source: Path, modules: list[str], submission: Submission) -> Path:
    """The folder holding the stage modules: the root, or the shallowest folder that has any."""
    def has_modules(folder: Path) -> bool:
        return any((folder / f"{m}{ext}").is_file() for m in modules for ext in (".py", ".ipynb"))

    if has_modules(source):
        return source
    candidates = sorted((p for p in source.rglob("*") if p.is_dir() and not _SKIP_DIRS & set(p.parts)
                         and has_modules(p)), key=lambda p: (len(p.parts), str(p)))
    if candidates:
        submission.notes.append(f"found the modules in the folder {candidates[0].relative_to(source)}/")
        return candidates[0]
    return source


def _copy(source: Path, dest: Path, submission: Submission) -> None:
    total, count = 0, 0
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if _SKIP_DIRS & set(rel.parts) or any(p.startswith(".") for p in rel.parts):
            continue
        if path.is_symlink() or not path.is_file():
            continue
        total += path.stat().st_size
        count += 1
        if total > MAX_TOTAL_BYTES or count > MAX_FILES:
            submission.notes.append(f"stopped copying at {rel}: the submission is too large")
            return
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / rel)


def _export_notebook(module: str, source: Path, submission: Submission) -> None:
    notebook = source / f"{module}.ipynb"
    if not notebook.is_file():
        return
    if (source / f"{module}.py").is_file():
        submission.notes.append(f"both {module}.py and {module}.ipynb were submitted: graded {module}.py")
        return
    try:
        (submission.root / f"{module}.py").write_text(export_module(notebook), encoding="utf-8")
        submission.notes.append(f"{module}.ipynb: graded its exported cells")
    except NotebookError as exc:
        submission.problems[module] = str(exc)
