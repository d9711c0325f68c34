"""The corpus's entries as files: what an entry says about itself (its header) and the
submission it stands for (`materialise`). The format is described in corpus.py, the one module
that the corpus's users import (it re-exports what is here)."""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grader.course import stages
from grader.course.skeleton import _BEGIN, _END
from grader.engine.banned import imported_modules

_EXPECT = re.compile(r"^\s*EXPECT:\s*(.+?)\s*$", re.MULTILINE)
_REQUIRES = re.compile(r"^\s*REQUIRES:\s*(.+?)\s*$", re.MULTILINE)
_PART = re.compile(r"^\s*PART:\s*(.+?)\s*$", re.MULTILINE)
_CAUGHT_BY = re.compile(r"^\s*CAUGHT_BY:\s*(.+?)\s*$", re.MULTILINE)
_LOSES = re.compile(r"^\s*LOSES:\s*(.+?)\s*$", re.MULTILINE)
_REFERENCE_MODULES = re.compile(r"^\s*REFERENCE_MODULES:\s*(.+?)\s*$", re.MULTILINE)
_ENTRY_MODULES = re.compile(r"^\s*ENTRY_MODULES:\s*(.+?)\s*$", re.MULTILINE)
_BASE = re.compile(r"^\s*BASE:\s*(.+?)\s*$", re.MULTILINE)
_DIFF_START = re.compile(r"^(--- |diff --git )", re.MULTILINE)
_DIFF_LINE = re.compile(r"^(@@ |\+\+\+ |index [0-9a-f]+\.\.|(new|deleted) file mode )", re.MULTILINE)


class EntryError(RuntimeError):
    """An entry cannot be written out: its BASE or ENTRY_MODULES names no entry (or goes round in
    a circle), or its patch has no diff where it needs one."""


class PatchError(EntryError):
    """An entry's patch does not apply to its base (the reference, or the entry BASE names, changed)."""


@dataclass
class Entry:
    stage: str
    kind: str          # "buggy" or "correct"
    path: Path

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.kind}/{self.path.stem}"

    @property
    def is_patch(self) -> bool:
        return self.path.suffix == ".patch"

    @property
    def header(self) -> str:
        """What the entry says about itself: a patch's text before its diff, else its stage module."""
        if self.is_patch:
            text = self.path.read_text(encoding="utf-8")
            start = _DIFF_START.search(text)
            return text[:start.start()] if start else text
        path = self.path if self.path.is_file() else self.path / f"{self.stage}.py"
        return path.read_text(encoding="utf-8")

    def _line(self, pattern: re.Pattern) -> str | None:
        match = pattern.search(self.header)
        return match[1] if match else None

    @property
    def expect(self) -> str | None:
        return self._line(_EXPECT)

    @property
    def requires(self) -> str | None:
        return self._line(_REQUIRES)

    @property
    def caught_by(self) -> str | None:
        """One hidden test that fails for this bug and names it: `test_bigram.py::test_nll_hand`."""
        return self._line(_CAUGHT_BY)

    @property
    def caught_by_test(self) -> str | None:
        """The test function CAUGHT_BY names (`test_nll_hand` of `test_bigram.py::test_nll_hand[cpu]`)."""
        return self.caught_by.split("::")[-1].split("[")[0] if self.caught_by else None

    @property
    def loses(self) -> set[str]:
        """Test functions a correct entry must fail by a course rule (`LOSES: <test file>::<test>`)."""
        words = (self._line(_LOSES) or "").replace(",", " ").split() if self.kind == "correct" else []
        return {word.split("::")[-1] for word in words}

    @property
    def reference_modules(self) -> list[str]:
        """Modules a folder entry takes from the references, marker-free, instead of holding
        copies (`REFERENCE_MODULES: embeddings attention`)."""
        return (self._line(_REFERENCE_MODULES) or "").replace(",", " ").split() if self.path.is_dir() else []

    @property
    def entry_modules(self) -> list[str]:
        """Modules a folder or patch entry takes from entries of other stages, each that entry's stage
        module as materialised (`ENTRY_MODULES: attention/correct/running_sums`)."""
        names = (self._line(_ENTRY_MODULES) or "").replace(",", " ").split()
        return names if self.path.is_dir() or self.is_patch else []

    @property
    def base(self) -> Entry | None:
        """The entry a patch is made against (`BASE: correct/naive_recount`, an entry of its stage:
        a file, a folder or a patch), not the reference. EntryError when it names no entry."""
        base = self._line(_BASE) if self.is_patch else None
        return find_entry(self.path.parent.parent.parent, f"{self.stage}/{base}", self, "BASE") if base else None

    @property
    def has_diff(self) -> bool:
        """Whether a patch holds a diff (one with none is its BASE and ENTRY_MODULES as they are)."""
        return self.is_patch and _DIFF_START.search(self.path.read_text(encoding="utf-8")) is not None

    @property
    def part(self) -> list[str]:
        """fnmatch patterns of the test functions allowed to charge this bug (empty: any)."""
        match = _PART.search(self.header)
        return match[1].replace(",", " ").split() if match else []

    def in_part(self, function: str) -> bool:
        return not self.part or any(fnmatch.fnmatchcase(function, p) for p in self.part)


def entries(corpus_root: Path, stage_names: list[str] | None = None,
            names: list[str] | None = None) -> list[Entry]:
    """The corpus's entries, optionally only those stages, or names matching `<stage>/<name>` globs."""
    found = []
    for stage_dir in sorted(p for p in Path(corpus_root).iterdir() if p.is_dir()):
        if stage_names and stage_dir.name not in stage_names:
            continue
        for kind in ("buggy", "correct"):
            for path in sorted((stage_dir / kind).glob("*")):
                short = f"{stage_dir.name}/{path.stem}"
                if names and not any(fnmatch.fnmatchcase(short, n) for n in names):
                    continue
                if path.name.startswith((".", "__")):   # __pycache__, editor files
                    continue
                if path.suffix in (".py", ".patch") or path.is_dir():
                    found.append(Entry(stage_dir.name, kind, path))
    return found


def find_entry(corpus_root: Path, name: str, by: Entry | None = None, line: str = "") -> Entry:
    """The entry `<stage>/<kind>/<name>` of the corpus (`<name>.py`, `<name>.patch` or a folder);
    EntryError, naming `by` and its header `line`, when there is none."""
    parts = name.split("/")
    if len(parts) == 3 and all(parts):
        stage, kind, stem = parts
        folder = Path(corpus_root) / stage / kind
        for path in (folder / f"{stem}.py", folder / f"{stem}.patch", folder / stem):
            if path.is_file() if path.suffix in (".py", ".patch") else path.is_dir():
                return Entry(stage, kind, path)
    who = f"{by.name}: {line}: " if by else ""
    raise EntryError(f"{who}no corpus entry {name!r} (no {name}.py, {name}.patch or folder {name}/ "
                     f"under {corpus_root})")


def reference_files(stage: str, root: Path | None = None) -> dict[str, str]:
    """The reference submission for `stage`: file name -> text of solutions/<stage>.py and of the
    solutions it imports (transitively), with the solution marker lines removed."""
    solutions = (root or stages.project_root()) / "solutions"
    files, todo = {}, [stage]
    while todo:
        module = todo.pop()
        if f"{module}.py" in files or not (solutions / f"{module}.py").exists():
            continue
        lines = (solutions / f"{module}.py").read_text(encoding="utf-8").splitlines(keepends=True)
        files[f"{module}.py"] = text = "".join(l for l in lines if not (_BEGIN.match(l) or _END.match(l)))
        todo += [name.split(".")[0] for name in imported_modules(ast.parse(text))]
    return files


def apply_patch(patch: Path, folder: Path, name: str = "", onto: str = "the reference") -> None:
    """Apply `patch` to the files in `folder` (`onto`: what they are) with `git apply` (exact: no fuzz);
    PatchError if it fails."""
    folder = Path(folder).resolve()
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(folder.parent)}   # never the repository around it
    run = subprocess.run(["git", "apply", "--whitespace=nowarn", str(Path(patch).resolve())],
                         cwd=folder, env=env, capture_output=True, text=True)
    if run.returncode:
        raise PatchError(f"{name or patch}: its patch no longer applies to {onto}: "
                         f"{(run.stderr or run.stdout).strip()}")


def materialise(entry: Entry, folder: Path, _chain: tuple[str, ...] = ()) -> Path:
    """Write the entry's submission files into `folder` (made if missing) and return `folder`:
    a whole file or folder as it is (a folder with its REFERENCE_MODULES, then its ENTRY_MODULES);
    a patch applied to its base (the marker-free reference, or the entry BASE names, materialised)
    once its ENTRY_MODULES are written over that base. EntryError (PatchError when a patch does not
    apply) when the entry cannot be written out."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if entry.name in _chain:
        raise EntryError(f"{' -> '.join((*_chain, entry.name))}: BASE / ENTRY_MODULES go round in a circle")
    chain = (*_chain, entry.name)
    if entry.path.is_dir():
        shutil.copytree(entry.path, folder, dirs_exist_ok=True)
        for module in entry.reference_modules:   # helpers it uses as the reference wrote them
            (folder / f"{module}.py").write_text(reference_files(module)[f"{module}.py"], encoding="utf-8")
        _write_entry_modules(entry, folder, chain)
    elif entry.is_patch:
        base = entry.base
        if base:
            materialise(base, folder, chain)
        else:
            for file_name, text in reference_files(entry.stage).items():
                (folder / file_name).write_text(text, encoding="utf-8")
        _write_entry_modules(entry, folder, chain)
        if entry.has_diff:
            apply_patch(entry.path, folder, entry.name, f"its BASE {base.name}" if base else "the reference")
        elif _DIFF_LINE.search(entry.path.read_text(encoding="utf-8")):
            raise EntryError(f"{entry.name}: its patch is malformed: diff lines without the diff's "
                             f"'--- a/<file>' start")
        elif not (base or entry.entry_modules):
            raise EntryError(f"{entry.name}: its patch has no diff (only one with a BASE or "
                             f"ENTRY_MODULES may have none: then it is those, as they are)")
    else:
        shutil.copy(entry.path, folder / f"{entry.stage}.py")
    return folder


def _write_entry_modules(entry: Entry, folder: Path, chain: tuple[str, ...]) -> None:
    """Write over `folder` the stage module of each entry the header's ENTRY_MODULES names
    (`attention/correct/running_sums` writes that entry's attention.py, materialised)."""
    for name in entry.entry_modules:
        other = find_entry(entry.path.parent.parent.parent, name, entry, "ENTRY_MODULES")
        if other.stage == entry.stage:
            raise EntryError(f"{entry.name}: ENTRY_MODULES: {name} is of its own stage (its stage "
                             f"module is the entry itself; a patch says BASE: {other.kind}/{other.path.stem})")
        with tempfile.TemporaryDirectory() as tmp:
            module = materialise(other, Path(tmp), chain) / f"{other.stage}.py"
            shutil.copy(module, folder / f"{other.stage}.py")


def entry_files(entry: Entry) -> dict[str, str]:
    """The entry's submission as file name -> text (materialised in a scratch folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = materialise(entry, Path(tmp))
        return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir()) if p.is_file()}


def module_text(stage: str, name: str, kind: str = "buggy", corpus_root: Path | None = None) -> str:
    """The stage module a submission of entry tests/corpus/<stage>/<kind>/<name> holds (for tests
    that use a corpus bug as a ready-made wrong submission)."""
    root = Path(corpus_root or stages.project_root() / "tests" / "corpus")
    [entry] = [e for e in entries(root, [stage], [f"{stage}/{name}"]) if e.kind == kind]
    return entry_files(entry)[f"{stage}.py"]
