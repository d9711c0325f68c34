"""Banned APIs, trapped in the worker: calling one raises `BannedAPIError`.

A stage may forbid library shortcuts (`F.softmax` in the stage where students
write softmax). Its reference lists them as dotted names,

    BANNED_APIS = ("torch.nn.functional.softmax", "torch.Tensor.softmax", "torch.nn.Transformer*")

and before the submission is imported the worker replaces each with a trap:
functions become functions that raise, classes become subclasses whose
constructor raises (so `class Loss(nn.CrossEntropyLoss)` still imports, and
fails when used). Installing before the import also catches aliases taken at
import time (`from torch.nn.functional import softmax as sm`). This runs only
in the worker; the source check on the grading side is `grader/banned.py`.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import types
from typing import Any, Iterator

import torch


class BannedAPIError(RuntimeError):
    """Raised by a call to an API the stage does not allow."""


def message(name: str) -> str:
    short = (name.replace("torch.nn.functional.", "F.").replace("torch.nn.", "nn.")
             .replace("torch.Tensor.", "Tensor."))
    return (f"{short} is not allowed in this stage: write it yourself "
            f"(the handout lists the banned APIs)")


def resolve(name: str) -> Iterator[tuple[Any, str, str]]:
    """(owner, attribute, full name) for each object `name` denotes; a trailing * globs."""
    parts = name.split(".")
    owner: Any = None
    for i in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:-1]:
            owner = getattr(owner, part, None)
        break
    if owner is None:
        return
    pattern = parts[-1]
    if "*" in pattern:   # a glob names public objects, never dunders or submodules
        attributes = [a for a in fnmatch.filter(dir(owner), pattern) if not a.startswith("__")
                      and not isinstance(getattr(owner, a, None), types.ModuleType)]
    else:
        attributes = [pattern]
    for attribute in attributes:
        if hasattr(owner, attribute):
            yield owner, attribute, ".".join(parts[:-1] + [attribute])


def _trap(full_name: str, original: Any) -> Any:
    text = message(full_name)
    if isinstance(original, type):
        def __init__(self, *args, **kwargs):
            raise BannedAPIError(text)
        return type(original.__name__, (original,), {
            "__init__": __init__, "__module__": original.__module__,
            "__qualname__": original.__qualname__, "__llmgrade_banned__": full_name})

    @functools.wraps(original) if callable(original) else (lambda f: f)
    def trapped(*args, **kwargs):
        raise BannedAPIError(text)
    trapped.__llmgrade_banned__ = full_name
    return trapped


def _home_module(obj: Any) -> Any:
    module_name = getattr(obj, "__module__", None)
    if not isinstance(module_name, str) or not module_name.startswith("torch"):
        return None
    try:
        return importlib.import_module(module_name)
    except ImportError:
        return None


def install(names: list[str]) -> list[str]:
    """Trap every API in `names` in this process; returns the full names trapped."""
    trapped = []
    for name in names:
        for owner, attribute, full_name in resolve(name):
            original = getattr(owner, attribute)
            if getattr(original, "__llmgrade_banned__", None):
                continue
            replacement = _trap(full_name, original)
            setattr(owner, attribute, replacement)
            trapped.append(full_name)
            # Also where it is defined (torch.nn.modules.loss.CrossEntropyLoss for nn.CrossEntropyLoss).
            home = _home_module(original)
            if home is not None and home is not owner and getattr(home, attribute, None) is original:
                setattr(home, attribute, replacement)
    return trapped
