"""`llmgrade submit`'s logic: validate a student's working copy and pack what is graded into a zip.

    report = validate(Path("."))          # nothing is graded; modules are imported in a worker
    if report.ok: pack(report, Path("submission.zip"))

Checks, for every stage module present (`<stage>.py`, or `<stage>.ipynb` standing for it):
the notebook is valid and exports code; the source parses; no banned API of the
stage is used (the same source scan as the hidden test); the module imports in a
sandboxed worker. Missing stages are warnings. The zip holds only what the
grader reads: the stage modules or notebooks, and the helper modules of the
folder that they import (directly or through each other).

The banned list of a stage is read, as a literal, from the skeleton
`assignments/<stage>.py` next to the grader (it exists in the course repository
and in the student bundle alike), or else from `solutions/<stage>.py`; never
from the student's own file, and nothing is imported to read it.
"""

from __future__ import annotations

import ast
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from grader import scratch

from grader.course import stages
from grader.engine.banned import find_banned_apis, imported_modules, stage_banned_apis
from grader.engine.notebooks import NotebookError, export_module
from grader.engine.remote import RemoteSubmission, StudentCodeError, SubmissionProblem
from grader.worker.client import WorkerOptions, WorkerSession

MAX_FILE_BYTES = 5 * 2**20
MAX_ZIP_BYTES = 20 * 2**20
IMPORT_TIMEOUT = 60.0
MESSAGE_LINES = 6


@dataclass
class ModuleReport:
    stage: str
    file: str | None = None               # the file graded for this stage; None when missing
    problems: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)   # functions still ending in `raise NotImplementedError`
    defined: int = 0                      # functions and methods the module defines


@dataclass
class Report:
    folder: Path
    modules: list[ModuleReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    helpers: list[str] = field(default_factory=list)     # other files to pack (relative paths)

    @property
    def problems(self) -> list[str]:
        return [p for m in self.modules for p in m.problems]

    @property
    def ok(self) -> bool:
        return not self.problems and any(m.file for m in self.modules)

    def files(self) -> list[str]:
        return [m.file for m in self.modules if m.file] + self.helpers


def has_stage_modules(folder: Path, names: list[str]) -> bool:
    return any((folder / f"{n}{ext}").is_file() for n in names for ext in (".py", ".ipynb"))


def working_copy(folder: Path, names: list[str]) -> Path | None:
    """The folder holding the stage modules: `folder` itself, or else its one sub-folder that does
    (run from the bundle's root, that is `assignments/`); None when there is none or several."""
    if has_stage_modules(folder, names):
        return folder
    found = [sub for sub in sorted(folder.iterdir()) if sub.is_dir() and has_stage_modules(sub, names)]
    return found[0] if len(found) == 1 else None


def unfinished_functions(source: str) -> tuple[list[str], int]:
    """The functions (and methods) whose body still ends in the skeleton's `raise NotImplementedError`,
    and how many functions the source defines in all."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return [], 0
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    def untouched(node) -> bool:
        last = node.body[-1]
        if not isinstance(last, ast.Raise) or last.exc is None:
            return False
        exc = last.exc.func if isinstance(last.exc, ast.Call) else last.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return [n.name for n in functions if untouched(n)], len(functions)


def validate(folder: Path, *, import_timeout: float = IMPORT_TIMEOUT) -> Report:
    """Check every stage module in `folder` (nothing is graded); see the module docstring."""
    folder = Path(folder)
    report = Report(folder)
    all_stages = stages.discover()
    sources: dict[str, str] = {}     # stage -> code that parses
    texts: dict[str, str] = {}       # stage -> code as read (a syntax error included), for the import check
    for stage in all_stages:
        entry = ModuleReport(stage.name)
        report.modules.append(entry)
        py, nb = folder / f"{stage.name}.py", folder / f"{stage.name}.ipynb"
        if py.is_file():
            entry.file = py.name
            if nb.is_file():
                report.warnings.append(f"both {py.name} and {nb.name} are here: {py.name} is graded and "
                                       f"packed, {nb.name} is left out (delete the one you do not use)")
        elif nb.is_file():
            entry.file = nb.name
        else:
            continue
        text = _source(folder / entry.file, entry)
        if text is not None:
            entry.unfinished, entry.defined = unfinished_functions(text)
            texts[stage.name] = text
            if not entry.problems:
                sources[stage.name] = text
    missing = [m.stage for m in report.modules if not m.file]
    if missing:
        report.warnings.append(f"missing stages (they will score 0): {', '.join(missing)} "
                               f"(neither <stage>.py nor <stage>.ipynb is in {folder})")
    for entry in report.modules:
        if entry.unfinished:
            report.warnings.append(f"{entry.file}: {', '.join(entry.unfinished)} still raise NotImplementedError "
                                   "(the skeleton's body; their tests will score 0)")
    report.helpers = _helpers(folder, sources, {m.stage for m in report.modules})
    for rel in report.files():
        size = (folder / rel).stat().st_size
        if size > MAX_FILE_BYTES:
            hint = " (clear the notebook's outputs)" if rel.endswith(".ipynb") else ""
            _owner(report, rel).problems.append(
                f"{rel} is {size / 2**20:.1f} MiB; a graded file may be at most "
                f"{MAX_FILE_BYTES // 2**20} MiB{hint}")
    if sources:
        _check_in_scratch(report, sources, texts, import_timeout)
    return report


def _owner(report: Report, rel: str) -> ModuleReport:
    stem = Path(rel).parts[0].removesuffix(".py").removesuffix(".ipynb")
    return next((m for m in report.modules if m.stage == stem), report.modules[0])


def _source(path: Path, entry: ModuleReport) -> str | None:
    """The module's code (a notebook's exported cells); None when unreadable. Problems are noted in `entry`."""
    try:
        source = export_module(path) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")
    except NotebookError as exc:
        entry.problems.append(str(exc))
        return None
    except (OSError, UnicodeDecodeError) as exc:
        entry.problems.append(f"{path.name} cannot be read ({exc})")
        return None
    try:
        ast.parse(source, path.name)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" if path.suffix == ".py" else "an exported cell"
        entry.problems.append(f"{path.name}, {where}: syntax error: {exc.msg}")
    return source


def _helpers(folder: Path, sources: dict[str, str], stage_names: set[str]) -> list[str]:
    """Files of the folder's own (non-stage) modules that the stage modules import, transitively."""
    queue = [source for source in sources.values()]
    found: dict[str, None] = {}
    while queue:
        try:
            tree = ast.parse(queue.pop())
        except (SyntaxError, ValueError):
            continue
        for name in imported_modules(tree):
            top = name.split(".")[0]
            if top in stage_names:
                continue
            if (folder / f"{top}.py").is_file():
                files = [folder / f"{top}.py"]
            elif (folder / top / "__init__.py").is_file():
                files = sorted(p for p in (folder / top).rglob("*.py") if "__pycache__" not in p.parts)
            else:
                continue  # an installed package
            for path in files:
                rel = path.relative_to(folder).as_posix()
                if rel not in found:
                    found[rel] = None
                    queue.append(path.read_text(encoding="utf-8", errors="replace"))
    return list(found)


def _check_in_scratch(report: Report, sources: dict[str, str], texts: dict[str, str],
                      import_timeout: float) -> None:
    """Banned-API scan and a real import in a worker, on a copy of exactly what would be packed."""
    work = scratch.mkdtemp("llmgrade-submit-")
    try:
        root = work / "modules"
        root.mkdir()
        for stage_name, text in texts.items():
            (root / f"{stage_name}.py").write_text(text, encoding="utf-8")
        for rel in report.helpers:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(report.folder / rel, root / rel)
        problems = {m.stage: "; ".join(m.problems) for m in report.modules if m.problems}
        problems.update({m.stage: f"{m.stage}.py is missing from your submission"
                         for m in report.modules if not m.file})
        for entry in report.modules:
            if entry.stage not in sources or entry.problems:
                continue
            banned = stage_banned_apis(entry.stage)
            if banned:
                for finding in find_banned_apis(root, entry.stage, banned)[:MESSAGE_LINES]:
                    entry.problems.append(f"banned in this stage: {finding}")
            error = _import_error(root, entry.stage, banned, problems, import_timeout)
            if error:
                entry.problems.append(error)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _import_error(root: Path, module: str, banned: tuple[str, ...], problems: dict[str, str],
                  timeout: float) -> str | None:
    """None when `module` imports in a fresh sandboxed worker, else the student-facing reason."""
    options = WorkerOptions(hidden_paths=[str(stages.project_root())])
    session = WorkerSession(root, options, default_timeout=timeout)
    try:
        remote = RemoteSubmission(session, {k: v for k, v in problems.items() if k != module}, banned)
        remote.call_timeout = timeout
        getattr(remote, module)
    except (StudentCodeError, SubmissionProblem) as exc:
        lines = str(exc).strip().splitlines() or ["failed"]
        shown = lines[:1] + lines[1:][-(MESSAGE_LINES - 1):] if len(lines) > MESSAGE_LINES else lines
        return "\n".join(shown)
    finally:
        session.close()
    return None


def pack(report: Report, out: Path) -> list[str]:
    """Write the zip of `report.files()` (at the zip's root, as in the folder); returns the names."""
    names = report.files()
    total = sum((report.folder / n).stat().st_size for n in names)
    if total > MAX_ZIP_BYTES:
        raise ValueError(f"the graded files add up to {total / 2**20:.1f} MiB (at most {MAX_ZIP_BYTES // 2**20} MiB)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, (report.folder / name).read_bytes())
    partial.replace(out)
    return names

