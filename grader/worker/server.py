"""The worker: the only process that imports and runs a submission's code.

It is forked from a template process that has already imported torch (see
`template.py`), locks itself down (`sandbox.py`), then answers requests from the
grader one at a time: import a module, get an attribute, call something
(optionally running backward and returning gradients), release handles, trap
banned APIs.
Anything that is not plain data stays here and is known to the grader by a
numbered handle.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

from grader.worker import codec, fixtures, framing, sandbox, traps

MAX_MESSAGE = 8000


class Worker:
    def __init__(self, submission_dir: str, max_bytes: int):
        self.submission_dir = submission_dir
        self.max_bytes = max_bytes
        self.objects: dict[int, Any] = {}
        self.next_id = 1

    # -- handles

    def to_handle(self, obj: Any) -> codec.Handle:
        handle_id = self.next_id
        self.next_id += 1
        self.objects[handle_id] = obj
        return codec.Handle(handle_id, _type_name(obj), callable(obj))

    def from_handle(self, handle: codec.Handle) -> Any:
        if handle.id not in self.objects:
            raise LookupError(f"unknown handle {handle.id}")
        return self.objects[handle.id]

    # -- requests

    def handle(self, frame: bytes) -> bytes:
        generators: list[torch.Generator] = []
        try:
            request = codec.decode(frame, from_handle=self.from_handle, with_grad=True,
                                   max_bytes=self.max_bytes)
            generators = _collect(request, torch.Generator)
            _reset_numerics()
            result = getattr(self, "op_" + request["op"])(request)
            response = {"ok": True, "value": result,
                        "generators": [g.get_state() for g in generators]}
        except BaseException as exc:  # noqa: BLE001 -- SystemExit and KeyboardInterrupt included
            response = {"ok": False, "error": self.describe(exc)}
        _flush()
        try:
            return codec.encode(response, to_handle=self.to_handle, max_bytes=self.max_bytes)
        except codec.CodecError as exc:
            error = {"type": "ValueError", "mro": ["ValueError"], "traceback": "",
                     "message": f"the result could not be sent back to the grader: {exc}"}
            return codec.encode({"ok": False, "error": error})

    def op_import(self, request: dict) -> Any:
        name = request["module"]
        if not name.isidentifier():
            raise ValueError(f"bad module name {name!r}")
        spec_origin = Path(self.submission_dir, name + ".py")
        if not spec_origin.is_file():
            raise ModuleNotFoundError(f"no {name}.py in the submission")
        module = importlib.import_module(name)
        if Path(getattr(module, "__file__", "") or "").resolve() != spec_origin.resolve():
            raise ModuleNotFoundError(f"{name} was not imported from the submission")
        return self.to_handle(module)

    def op_getattr(self, request: dict) -> Any:
        return getattr(request["target"], request["name"])

    def op_ref(self, request: dict) -> Any:
        """Like getattr, but keep the result here even when it is data."""
        return self.to_handle(getattr(request["target"], request["name"]))

    def op_call(self, request: dict) -> Any:
        return run_call(request["target"], request["args"], request["kwargs"], request.get("backward"))

    def op_repeat(self, request: dict) -> None:
        """Call the target `times` times and return nothing: the grader measures the time itself
        (see grader/engine/timing.py). `threads`: torch's intra-op threads meanwhile (None: as they are)."""
        threads, previous = request.get("threads"), torch.get_num_threads()
        if threads:
            torch.set_num_threads(int(threads))
        try:
            for _ in range(int(request["times"])):
                request["target"](*request["args"], **request["kwargs"])
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
        finally:
            torch.set_num_threads(previous)

    def op_fixture(self, request: dict) -> Any:
        """Build one of the stages' fixture objects here (worker/fixtures.py: loaded by the template),
        e.g. a model to sample from."""
        return self.to_handle(fixtures.build(request["name"], request["args"], request["kwargs"], load_missing=False))

    def op_release(self, request: dict) -> None:
        for handle_id in request["ids"]:
            self.objects.pop(handle_id, None)

    def op_ban(self, request: dict) -> list[str]:
        """Trap the stage's banned APIs (before its module is imported); see traps.py."""
        return traps.install([str(name) for name in request["names"]])

    def op_ping(self, request: dict) -> str:
        return "pong"

    # -- errors

    def describe(self, exc: BaseException) -> dict:
        try:
            message = str(exc)
        except BaseException:  # noqa: BLE001 -- a student exception whose __str__ fails
            message = "<the exception's message could not be printed>"
        if isinstance(exc, SyntaxError) and exc.filename:
            message = f"{exc.msg} ({Path(exc.filename).name}, line {exc.lineno})"
        return {"type": type(exc).__name__,
                "mro": [cls.__name__ for cls in type(exc).__mro__],
                "message": message[:MAX_MESSAGE],
                "traceback": self.student_traceback(exc)[:MAX_MESSAGE]}

    def student_traceback(self, exc: BaseException) -> str:
        """Only the frames in the submission's own files, with short file names."""
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if f.filename.startswith(self.submission_dir)]
        for frame in frames:
            frame.filename = os.path.relpath(frame.filename, self.submission_dir)
        return "".join(traceback.format_list(frames))


class OutputTypeError(TypeError):
    """A result that backward cannot start from (not a tensor)."""


def run_call(target: Any, args: list, kwargs: dict, backward: dict | None) -> Any:
    """`target(*args, **kwargs)`; with `backward`, also backpropagate and return gradients.

    backward = {"grad_output": tensor or None (a scalar output), "output_index": which
    element of a tuple output to backpropagate from, or None}. Returns then
    {"value", "input_grads" (of the argument tensors that require grad, depth first),
    "param_grads" (when target is a module or one of its methods)}.
    """
    if backward is None:
        return target(*args, **kwargs)
    module = _owning_module(target)
    if module is not None:
        module.zero_grad(set_to_none=True)
    value = target(*args, **kwargs)
    output = value if backward["output_index"] is None else value[backward["output_index"]]
    if not isinstance(output, torch.Tensor):
        raise OutputTypeError(f"the result must be a tensor to run backward on, got {type(output).__name__} "
                              f"(a Python number has no gradient)")
    grad_output = backward["grad_output"]
    if grad_output is not None:
        grad_output = grad_output.to(device=output.device, dtype=output.dtype)
    output.backward(grad_output)
    leaves = [t for t in _collect((args, kwargs), torch.Tensor) if t.requires_grad]
    params = {} if module is None else {
        name: p.grad for name, p in module.named_parameters() if p.requires_grad}
    return {"value": value, "input_grads": [t.grad for t in leaves], "param_grads": params}


def _type_name(obj: Any) -> str:
    if isinstance(obj, type(sys)):
        return "module"
    return getattr(type(obj), "__qualname__", "object")


def _owning_module(target: Any) -> torch.nn.Module | None:
    if isinstance(target, torch.nn.Module):
        return target
    owner = getattr(target, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


def _collect(value: Any, kind: type) -> list:
    """Instances of `kind` in `value`, depth first (the grader walks in the same order)."""
    if isinstance(value, kind):
        return [value]
    if isinstance(value, dict):
        value = [item for pair in value.items() for item in pair]
    if isinstance(value, (list, tuple)):
        return [found for item in value for found in _collect(item, kind)]
    return []


def _reset_numerics() -> None:
    """The contract: every graded call runs with TF32 off and full float32 matmuls."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.set_grad_enabled(True)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 -- student code may have replaced or closed them
            pass


def main(requests_fd: int, responses_fd: int, config: sandbox.SandboxConfig) -> None:
    """The worker's entry point, in the child just forked from the template; never returns."""
    code = sandbox.START_FAILED
    try:
        config.keep_fds = (requests_fd, responses_fd)
        sandbox.enter(config)
        worker = Worker(config.submission_dir, config.max_bytes)
        code = sandbox.SERVE_FAILED
        while True:
            try:
                frame = framing.read_frame(requests_fd, max_bytes=config.max_bytes)
            except framing.FrameClosed:
                break
            framing.write_frame(responses_fd, worker.handle(frame))
        code = 0
    except BaseException:  # noqa: BLE001 -- reported, then the exit code says which side broke
        try:
            os.write(2, ("\nllmgrade worker: " + traceback.format_exc()).encode(errors="replace"))
        except BaseException:  # noqa: BLE001
            pass
    finally:
        os._exit(code)
