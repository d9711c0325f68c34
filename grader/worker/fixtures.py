"""Objects the grader ships into the worker for a test to pass to submission code.

Some student functions take an object, not data: `generate(model, ...)` samples
from a model. The hidden tests must not pass the reference solution (it never
enters the worker), so they pass a fixture instead:

    model = student.fixture("ContextLM", vocab_size=11, block_size=4, seed=3, device=device)
    out = student.sampling.generate(model, idx, 5, block_size=4, generator=gen)

and build the same object in the grading process (`build_fixture(...)`) to compute
the expected result. A stage declares its fixtures in its own file, next to its public
tests (which use them too, so students have it): `assignments/tests/fixtures_<stage>.py`,
a module with a dict `FIXTURES` of name -> class (or function). The template process
loads every stage's file before it forks any worker, so workers never read course
files; the grading process loads them the first time a test builds one. Fixtures are
small and deterministic.

A stage file may also say which modules its workers use that torch imports only on first
use, and slowly: `PRELOAD = ("torch._dynamo",)` (an optimizer's first step imports it: 0.6-1.1 s).
The template imports them once, before it forks that stage's first worker, so that each
worker shares them instead of importing them itself, and a grading without that stage never
pays for them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

_FACTORIES: dict[str, Callable[..., Any]] = {}   # fixture name -> class or function
_LOADED: dict[str, str] = {}                      # fixture file -> "" once loaded, or why it failed
_PRELOADS: dict[str, tuple[str, ...]] = {}        # stage -> the modules its file's PRELOAD names


def stage_files(root: Path | None = None) -> list[str]:
    """The fixture files of the course's stages (assignments/tests/fixtures_<stage>.py)."""
    from grader.course import stages

    return [str(s.worker_fixtures) for s in stages.discover(root) if s.worker_fixtures.is_file()]


def load(paths: list[str]) -> None:
    """Import each fixture file once (as module `llmgrade_fixtures_<stage>`) and register its
    FIXTURES. A file that fails is remembered, and named when one of its fixtures is asked for."""
    for path in paths:
        if path in _LOADED:
            continue
        stage = Path(path).stem.removeprefix("fixtures_")
        name = "llmgrade_fixtures_" + stage
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            declared = getattr(module, "FIXTURES", None)
            if not isinstance(declared, dict):
                raise TypeError("it declares no FIXTURES dict (name -> class or function)")
            clash = sorted(set(declared) & set(_FACTORIES))
            if clash:
                raise ValueError(f"fixture {clash[0]!r} is declared by another stage's file too")
            _FACTORIES.update(declared)
            _PRELOADS[stage] = tuple(str(m) for m in getattr(module, "PRELOAD", ()))
            _LOADED[path] = ""
        except Exception as exc:  # noqa: BLE001 -- a course file's fault, told when it matters
            _LOADED[path] = f"{type(exc).__name__}: {exc}"


def preloads(*stage_names: str) -> list[str]:
    """The modules these stages' fixture files ask the template to import before their first worker."""
    return list(dict.fromkeys(name for stage in stage_names for name in _PRELOADS.get(stage, ())))


def stages() -> list[str]:
    """The stages whose fixture files are loaded."""
    return list(_PRELOADS)


def build(name: str, args: list, kwargs: dict, *, load_missing: bool = True) -> Any:
    """The fixture `name`, built with `args` and `kwargs` (`device=` moves a module there and
    sets eval mode). `load_missing`: load the course's fixture files first if `name` is unknown
    (the grading process; a worker has what its template loaded)."""
    if name not in _FACTORIES and load_missing:
        load(stage_files())
    if name not in _FACTORIES:
        failed = "; ".join(f"{Path(p).name}: {why}" for p, why in _LOADED.items() if why)
        raise ValueError(f"unknown fixture {name!r}" + (f" (a fixture file failed to load: {failed})" if failed else ""))
    kwargs = dict(kwargs)
    device = kwargs.pop("device", None)
    obj = _FACTORIES[name](*args, **kwargs)
    from torch import nn
    if device is not None and isinstance(obj, nn.Module):
        obj = obj.to(device).eval()
    return obj
