"""Read a submission (folder, zip, notebooks, single file) into a clean folder of modules.

Nothing here runs submission code. Whatever is wrong with the input becomes
a message: for the whole submission (a zip that cannot be read) or for one
module (a broken notebook), so the other stages are still graded.

Symbolic links are never followed (the grading process may be root, and a link
could name /etc/shadow or the course's solutions): a stage module or notebook
that is a link, in a folder or as a zip member, is a problem of that module
("bigram.ipynb is a symbolic link; submit the file itself"); any other link,
to a file or a folder, is left out with a note. Zip links are never created on
disk, and files are opened with O_NOFOLLOW.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from grader.engine.notebooks import NotebookError, export_module, symlink_message

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
    links: set[Path] = set()   # zip members that are symbolic links: recorded, never created
    try:
        if path.is_dir():
            source = path
        elif path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path)):
            source = dest.parent / (dest.name + "-unzipped")
            links = _unzip(path, source)
        elif path.is_file() and path.suffix in (".py", ".ipynb"):
            source = dest.parent / (dest.name + "-single")
            source.mkdir()
            shutil.copy2(path, source / path.name, follow_symlinks=False)   # a link stays a link: refused below
        elif path.exists():
            raise SubmissionError(f"{path.name} is not a folder, a .zip, a .py file or a notebook")
        else:
            raise SubmissionError(f"{path} does not exist")
        source = _module_folder(source, modules, submission, links)
        dropped = _copy(source, dest, submission, links, modules)
    except SubmissionError as exc:
        for module in modules:
            submission.problems[module] = str(exc)
        return submission
    module_files = {source / f"{m}{ext}" for m in modules for ext in (".py", ".ipynb")}
    dropped += sorted(str(link.relative_to(source)) for link in links
                      if link not in module_files and link.is_relative_to(source))
    if dropped:
        shown = ", ".join(dropped[:5]) + (f" and {len(dropped) - 5} more" if len(dropped) > 5 else "")
        submission.notes.append(f"left out {len(dropped)} symbolic link{'s' * (len(dropped) > 1)} "
                                f"({shown}): submit the files themselves")
    for module in modules:
        _export_notebook(module, source, submission, links)
    return submission


def _is_link(path: Path, links: set[Path]) -> bool:
    return path in links or path.is_symlink()


class SubmissionError(ValueError):
    """The submission as a whole cannot be read."""


def _unzip(archive: Path, target: Path) -> set[Path]:
    """Extract the regular files of `archive` into `target`; returns where its symbolic links
    would have been (they are not created)."""
    target.mkdir(parents=True)
    links = set()
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
                if member.is_dir() or _SKIP_DIRS & set(name.parts):
                    continue
                if stat.S_ISLNK(member.external_attr >> 16):
                    link = target.joinpath(*name.parts)
                    link.parent.mkdir(parents=True, exist_ok=True)   # so the module folder is found
                    links.add(link)
                    continue
                out = target.joinpath(*name.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, SubmissionError):
            raise
        raise SubmissionError(f"the zip could not be read ({exc})") from None
    return links


def _module_folder(source: Path, modules: list[str], submission: Submission, links: set[Path]) -> Path:
    """The folder holding the stage modules: the root, or the shallowest folder that has any
    (never through a symbolic link to a folder)."""
    def has_modules(folder: Path) -> bool:
        return any(_is_link(f, links) or f.is_file()
                   for f in (folder / f"{m}{ext}" for m in modules for ext in (".py", ".ipynb")))

    if has_modules(source):
        return source
    candidates = []
    for root, dirs, _ in os.walk(source, followlinks=False):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not os.path.islink(os.path.join(root, d))]
        folder = Path(root)
        if folder != source and has_modules(folder):
            candidates.append(folder)
    candidates.sort(key=lambda p: (len(p.parts), str(p)))
    if candidates:
        submission.notes.append(f"found the modules in the folder {candidates[0].relative_to(source)}/")
        return candidates[0]
    return source


def _copy(source: Path, dest: Path, submission: Submission, links: set[Path], modules: list[str]) -> list[str]:
    """Copy the regular files under `source` (no hidden or skipped folders) to `dest`; returns
    the symbolic links left out (stage modules excepted: `_export_notebook` reports those)."""
    total, count, dropped = 0, 0, []
    for root, dirs, files in os.walk(source, followlinks=False):
        folder = Path(root)
        kept = []
        for name in sorted(dirs):
            if name in _SKIP_DIRS or name.startswith("."):
                continue
            if os.path.islink(folder / name):
                dropped.append(f"{(folder / name).relative_to(source)}/")
            else:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            path = folder / name
            rel = path.relative_to(source)
            if name.startswith("."):
                continue
            if _is_link(path, links):
                if folder != source or path.suffix not in (".py", ".ipynb") or path.stem not in modules:
                    dropped.append(str(rel))
                continue
            count += 1
            try:
                size = _copy_file(path, dest / rel, MAX_TOTAL_BYTES - total if count <= MAX_FILES else -1)
            except OSError:
                continue   # not a regular file (a FIFO, a socket) or unreadable: nothing to grade
            if size is None:
                submission.notes.append(f"stopped copying at {rel}: the submission is too large")
                return dropped
            total += size
    return dropped


def _copy_file(src: Path, dst: Path, limit: int) -> int | None:
    """Copy a regular file without following a link at `src` (O_NOFOLLOW); returns its size,
    or None, copying nothing, when it is larger than `limit` bytes."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(src, flags)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{src.name} is not a regular file")
        if info.st_size > limit:
            return None
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "wb") as out:
            shutil.copyfileobj(file, out, length=1 << 20)
            return out.tell()


def _export_notebook(module: str, source: Path, submission: Submission, links: set[Path]) -> None:
    """Grade `module`.ipynb's exported cells when there is no `module`.py; a stage module that
    is a symbolic link (the .py first, as it would be graded) is a problem, never opened."""
    py, notebook = source / f"{module}.py", source / f"{module}.ipynb"
    for candidate in (py, notebook):
        if _is_link(candidate, links):
            submission.problems[module] = symlink_message(candidate.name)
            return
        if candidate == py and py.is_file():
            if notebook.is_file() or _is_link(notebook, links):
                submission.notes.append(f"both {module}.py and {module}.ipynb were submitted: graded {module}.py")
            return
    if not notebook.is_file():
        return
    try:
        (submission.root / f"{module}.py").write_text(export_module(notebook), encoding="utf-8")
        submission.notes.append(f"{module}.ipynb: graded its exported cells")
    except NotebookError as exc:
        submission.problems[module] = str(exc)
