"""How hidden tests talk to a submission: proxies for what lives in the worker.

    student.bigram.nll(probs, words, stoi)          # a float, computed in the worker
    model = student.transformer.GPT(65, 64, 32, 2, 4)   # a RemoteObject
    model.load_state_dict(reference_model.state_dict())
    result = backward(model, idx, targets, output_index=1)   # values and gradients
    lm = student.fixture("ContextLM", vocab_size=11, block_size=4)   # a grader object in the worker

Every failure of submission code surfaces as a `StudentCodeError` whose message
is written for the student ("bigram.nll(...) raised KeyError: 'z'", "did not
finish within 10 s"), and a module the submission lacks as a
`SubmissionProblem`. `LocalSubmission` offers the same surface over modules
imported in-process; only benchmarks use it, on trusted code.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from grader.engine.hints import hint_for
from grader.worker.client import StudentException, WorkerFailure, WorkerSession
from grader.worker.codec import Handle


class SubmissionProblem(Exception):
    """A stage module cannot be used at all (missing, broken notebook, ...)."""


class StudentCodeError(Exception):
    """Submission code failed; the message is for the student."""

    def __init__(self, what: str, cause: StudentException | WorkerFailure | BaseException):
        self.what, self.cause = what, cause
        super().__init__(self.describe())

    @property
    def type_name(self) -> str | None:
        if isinstance(self.cause, StudentException):
            return self.cause.type_name
        if isinstance(self.cause, WorkerFailure):
            return None
        return type(self.cause).__name__

    def is_a(self, name: str) -> bool:
        if isinstance(self.cause, StudentException):
            return self.cause.is_a(name)
        return any(cls.__name__ == name for cls in type(self.cause).__mro__)

    def describe(self) -> str:
        cause = self.cause
        if isinstance(cause, WorkerFailure):
            return f"{self.what} {cause}"
        if isinstance(cause, StudentException):
            name, message, trace = cause.type_name, cause.message, cause.traceback
        else:
            name, message, trace = type(cause).__name__, str(cause), ""
        if name == "NotImplementedError":
            return f"{self.what} is not implemented yet (it raised NotImplementedError)"
        text = f"{self.what} raised {name}: {message}"
        frames = _student_frames(trace)
        if frames:
            text += f"\n  at {frames[-1]}"
        if name == "TypeError" and not trace:
            text += "\n(check the function's name and signature against the handout)"
        if name == "MemoryError":
            text += "\n(the worker ran out of memory)"
        hint = hint_for(name, message, trace, self.what)
        if hint:
            text += f"\nhint: {hint}"
        if len(frames) > 1:
            text += f"\nTraceback (your files only):\n{trace.rstrip()}"
        return text


_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>.+)\n(?:    (?P<code>.*))?',
                    re.MULTILINE)


def _student_frames(trace: str) -> list[str]:
    """'tokenizer.py, line 42, in train_bpe: best = max(stats)' for each frame of a student traceback."""
    return [f"{m['file']}, line {m['line']}, in {m['function']}" + (f": {m['code'].strip()}" if m["code"] else "")
            for m in _FRAME.finditer(trace or "")]


class RemoteObject:
    """An object in the worker: attribute access and calls are requests."""

    __slots__ = ("_remote", "_handle", "_generation", "_label")

    def __init__(self, remote: "RemoteSubmission", handle: Handle, generation: int, label: str):
        object.__setattr__(self, "_remote", remote)
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "_generation", generation)
        object.__setattr__(self, "_label", label)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._remote.request(
            {"op": "getattr", "target": self, "name": name}, f"{self._label}.{name}",
            missing=self._handle.type_name == "module")

    def __call__(self, *args, **kwargs) -> Any:
        return self._remote.request(
            {"op": "call", "target": self, "args": list(args), "kwargs": kwargs, "backward": None},
            f"{self._label}(...)")

    def __setattr__(self, name, value):
        raise AttributeError("remote objects are read-only; call their methods instead")

    def __repr__(self) -> str:
        return f"<{self._handle.type_name} in the worker: {self._label}>"

    @property
    def type_name(self) -> str:
        return self._handle.type_name


class RemoteSubmission:
    """One stage's view of a submission, served by a `WorkerSession`."""

    def __init__(self, session: WorkerSession, problems: dict[str, str] | None = None,
                 banned_apis: tuple[str, ...] = (), import_failures: dict | None = None):
        self._session = session
        self._problems = problems or {}
        # (module, banned APIs) -> why importing it failed: shared by the stages of one grading,
        # so a module whose import hangs or crashes costs its time limit once, not once per test.
        self._import_failures = import_failures if import_failures is not None else {}
        self._modules: dict[tuple[str, int], RemoteObject] = {}
        self._banned_apis = tuple(banned_apis)
        self._trapped_generation: int | None = None
        self.call_timeout: float | None = None

    def __getattr__(self, module: str) -> RemoteObject:
        if module.startswith("_"):
            raise AttributeError(module)
        if module in self._problems:
            raise SubmissionProblem(self._problems[module])
        failed = self._import_failures.get((module, self._banned_apis))
        if failed is not None:
            raise SubmissionProblem(failed)
        self._session.ensure_worker()
        key = (module, self._session.generation)
        if key not in self._modules:
            self._trap_banned_apis()
            try:
                self._modules[key] = self.request({"op": "import", "module": module}, module)
            except (StudentCodeError, SubmissionProblem) as exc:
                self._import_failures[(module, self._banned_apis)] = (
                    f"{exc}\n(tried once in this grading: every test that needs {module}.py fails with this)")
                raise
        return self._modules[key]

    def _trap_banned_apis(self) -> None:
        """Each fresh worker traps the stage's banned APIs before any submission import."""
        if self._banned_apis and self._trapped_generation != self._session.generation:
            self._session.request({"op": "ban", "names": list(self._banned_apis)}, self.call_timeout)
            self._trapped_generation = self._session.generation

    def request(self, message: dict, what: str, missing: bool = False) -> Any:
        self._session.ensure_worker()
        generation = self._session.generation

        def encode_handle(obj: Any) -> Handle:
            if not isinstance(obj, RemoteObject):
                raise TypeError(f"cannot send {type(obj).__name__} to the worker")
            if obj._generation != self._session.generation:
                raise StudentCodeError(what, WorkerFailure(
                    "uses an object that was lost when an earlier call crashed or timed out"))
            return obj._handle

        def decode_handle(handle: Handle) -> RemoteObject:
            return RemoteObject(self, handle, generation, what.removesuffix("(...)"))

        try:
            return self._session.request(message, self.call_timeout, encode_handle=encode_handle,
                                         decode_handle=decode_handle)
        except StudentException as exc:
            if missing and exc.is_a("AttributeError"):
                module, _, name = what.rpartition(".")
                raise StudentCodeError(what, StudentException(
                    "AttributeError", ["AttributeError"],
                    f"{module}.py defines no {name!r} (check the name against the handout)", "")) from None
            if message["op"] == "import":
                if exc.is_a("ModuleNotFoundError") and not exc.traceback:
                    raise SubmissionProblem(f"{what}.py is missing from your submission") from None
                dependency = _missing_module(exc)
                if dependency and dependency != what:
                    exc = StudentException(exc.type_name, exc.mro, (
                        f"{exc.message}: {what}.py imports {dependency}, but {dependency}.py is not in your "
                        f"submission (and no installed package has that name)"), exc.traceback)
                raise StudentCodeError(f"importing {what}.py", exc) from None
            raise StudentCodeError(what, exc) from None
        except WorkerFailure as exc:
            raise StudentCodeError(f"importing {what}.py" if message["op"] == "import" else what, exc) from None

    def fixture(self, name: str, *args, **kwargs) -> RemoteObject:
        """Build the stage fixture `name` (assignments/tests/fixtures_<stage>.py) in the worker, to pass
        to submission code."""
        self._trap_banned_apis()
        return self.request({"op": "fixture", "name": name, "args": list(args), "kwargs": kwargs},
                            f"fixture {name}")

    @contextlib.contextmanager
    def timeout(self, seconds: float):
        """Calls made inside this block may take up to `seconds` each."""
        previous, self.call_timeout = self.call_timeout, seconds
        try:
            yield
        finally:
            self.call_timeout = previous

    def output(self) -> str:
        return self._session.take_output()


def _missing_module(exc: StudentException) -> str | None:
    """The top-level module a ModuleNotFoundError is about ("No module named 'attention'")."""
    match = re.match(r"No module named '([\w.]+)'", exc.message) if exc.is_a("ModuleNotFoundError") else None
    return match[1].split(".")[0] if match else None


@dataclass
class GradResult:
    """What `backward` returns: the value, then gradients of the inputs and parameters."""

    value: Any
    input_grads: list[torch.Tensor | None]
    param_grads: dict[str, torch.Tensor | None]


def backward(fn: Any, *args, grad_output: torch.Tensor | None = None,
             output_index: int | None = None, **kwargs) -> GradResult:
    """Call `fn(*args, **kwargs)`, backpropagate `grad_output` (or from a scalar) and
    return the gradients of every input tensor that requires grad and, when `fn` is a
    module or one of its methods, of its parameters. Works on remote and local `fn`."""
    if isinstance(fn, RemoteObject):
        message = {"op": "call", "target": fn, "args": list(args), "kwargs": kwargs,
                   "backward": {"grad_output": grad_output, "output_index": output_index}}
        result = fn._remote.request(message, f"{fn._label}(...) [with backward]")
        return GradResult(result["value"], result["input_grads"], result["param_grads"])
    from grader.worker.server import run_call  # the same code path the worker runs

    target = fn._target if isinstance(fn, _LocalProxy) else fn
    try:
        result = run_call(target, list(args), kwargs,
                          {"grad_output": grad_output, "output_index": output_index})
    except Exception as exc:
        raise StudentCodeError(f"{getattr(fn, '_label', 'the function')}(...)", exc) from None
    return GradResult(result["value"], result["input_grads"], result["param_grads"])


class LocalSubmission:
    """The same surface as RemoteSubmission over modules imported in this process.

    For benchmarks on trusted code only: it runs the submission here.
    """

    def __init__(self, directory: Path):
        self._directory = str(directory)
        self.call_timeout = None

    def __getattr__(self, module: str):
        if module.startswith("_"):
            raise AttributeError(module)
        if self._directory not in sys.path:
            sys.path.insert(0, self._directory)
        return _LocalProxy(importlib.import_module(module), module)

    timeout = RemoteSubmission.timeout

    def fixture(self, name: str, *args, **kwargs):
        from grader.worker import fixtures

        return fixtures.build(name, list(args), kwargs)

    def output(self) -> str:
        return ""


class _LocalProxy:
    """Wraps a local object so that its exceptions look like a remote one's."""

    __slots__ = ("_target", "_label")

    def __init__(self, target: Any, label: str):
        self._target, self._label = target, label

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        return _LocalProxy(value, f"{self._label}.{name}") if callable(value) else value

    def __call__(self, *args, **kwargs) -> Any:
        try:
            value = self._target(*args, **kwargs)
        except Exception as exc:
            raise StudentCodeError(f"{self._label}(...)", exc) from None
        return _LocalProxy(value, self._label) if isinstance(value, torch.nn.Module) else value
