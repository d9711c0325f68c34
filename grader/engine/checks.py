"""Tensor-aware checks whose failure messages are feedback for the student.

    expect_close(student_out, reference_out, what="bigram_probs(counts)",
                 mistakes={"smoothing is added after normalising": buggy_out})

Each check compares type, shape, dtype, device, NaN/inf and then values, with
tolerances chosen per dtype and device (see `tolerance`), and says what differs:
"expected shape (2, 4, 8), got (2, 8, 4)", "max abs error 0.31 at index
(0, 2, 5)". When a check fails and the student's output matches what a known
mistake would produce, the message names the mistake first.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from grader.engine.remote import RemoteObject, StudentCodeError


class CheckFailure(AssertionError):
    """A failed check; str() is the feedback line(s)."""


# (atol, rtol) by dtype, then by device type where a device needs more room.
_TOLERANCES = {
    torch.float64: (1e-10, 1e-8),
    torch.float32: (1e-5, 1e-4),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1e-2, 1.6e-2),
}
_DEVICE_TOLERANCES = {
    ("cuda", torch.float32): (2e-5, 1e-4),
    ("cuda", torch.float64): (1e-9, 1e-7),
}


def tolerance(dtype: torch.dtype, device: torch.device | str = "cpu") -> tuple[float, float]:
    """(atol, rtol) for comparing a `dtype` result computed on `device` with a float64 reference.

    float32 on CPU: 1e-5 + 1e-4·|expected| covers honest drift (summation order,
    fused ops) and still catches near misses such as tanh-approximate GELU (4.7e-4).
    """
    device_type = torch.device(device).type
    if (device_type, dtype) in _DEVICE_TOLERANCES:
        return _DEVICE_TOLERANCES[device_type, dtype]
    return _TOLERANCES.get(dtype, (0.0, 0.0))


# Unit roundoff u (half an ulp at 1.0): float32 2**-24 ≈ 5.96e-8, float64 2**-53.
def unit_roundoff(dtype: torch.dtype = torch.float32) -> float:
    return torch.finfo(dtype).eps / 2


def reduction_atol(n_terms: int, abs_total: float, *, dtype: torch.dtype = torch.float32,
                   term_ulps: int = 4) -> float:
    """Absolute tolerance for a sum or mean of `n_terms` values accumulated in `dtype` in ANY order.

    `abs_total` is Σ|x_i| for a sum, or mean |x_i| for a mean (the bound scales alike).

    The arithmetic (Higham, *Accuracy and Stability of Numerical Algorithms*, §4.2):
    recursive summation s_k = fl(s_{k-1} + x_k) of n terms, in any order, satisfies

        |ŝ - s| ≤ γ_{n-1} · Σ|x_i|,   γ_m = m·u / (1 - m·u),   u = 2**-24 in float32.

    This bound holds for a Python running sum of float32 scalars, `.sum()`, pairwise
    summation and float64 accumulation alike (the last three are tighter), so no
    correct order can fall outside it. Each term also carries the error of its own
    evaluation (a log, an exp, a division: at most a few ulps each), which adds
    `term_ulps`·u·Σ|x_i|; hence γ_{n + term_ulps}.

    Example: the bigram NLL over 29k held-out bigrams, mean |x_i| ≈ 2.45:
    γ ≈ 29k · 5.96e-8 = 1.7e-3 relative, 4.2e-3 absolute; a float32 running sum is
    observed ~3e-5 away, and the nearest named mistake (dropping the end token) moves
    the value by > 5e-2. A test using this must check its named mistakes stay outside.
    For small n the elementwise tolerance (`tolerance`) is the larger one; use the max.
    """
    m = max(int(n_terms) - 1, 0) + term_ulps
    u = unit_roundoff(dtype)
    if m * u >= 1:
        return math.inf
    return m * u / (1 - m * u) * float(abs_total)


def describe(value: Any) -> str:
    """A short description of a value's kind, for "expected X, got Y" messages."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    if isinstance(value, np.ndarray):
        return f"a numpy array of shape {value.shape}"
    if isinstance(value, RemoteObject):
        return f"a {value.type_name} object"
    if value is None:
        return "None"
    return f"a {type(value).__name__}"


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


def _num(x: float) -> str:
    return f"{x:.6g}"


def tensor_mismatch(actual: Any, expected: torch.Tensor, *, atol: float | None = None,
                    rtol: float | None = None, check_dtype: bool = True,
                    check_device: bool = True, equal_nan: bool = False) -> str | None:
    """Why `actual` is not close to `expected`, or None when it is."""
    if not isinstance(actual, torch.Tensor):
        return f"expected a tensor, got {describe(actual)}"
    if tuple(actual.shape) != tuple(expected.shape):
        return f"expected shape {tuple(expected.shape)}, got {tuple(actual.shape)}"
    if check_dtype and actual.dtype != expected.dtype:
        return f"expected dtype {expected.dtype}, got {actual.dtype}"
    if check_device and actual.device.type != expected.device.type:
        return f"expected the result on {expected.device.type}, got it on {actual.device.type}"
    if actual.is_complex() or expected.is_complex():
        return None if torch.equal(actual.cpu(), expected.cpu()) else "values differ"
    default_atol, default_rtol = tolerance(actual.dtype, actual.device)
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    a = actual.detach().cpu().double()
    e = expected.detach().cpu().double()
    a_nan, e_nan = torch.isnan(a), torch.isnan(e)
    nan_wrong = a_nan & ~e_nan if equal_nan else a_nan | e_nan
    if nan_wrong.any():
        i = _index(int(nan_wrong.flatten().nonzero()[0]), tuple(a.shape))
        return (f"{int(nan_wrong.sum())} NaN value(s) where numbers were expected, first at index {i}"
                f" (got {_num(a[i].item())}, expected {_num(e[i].item())})")
    if equal_nan and (e_nan & ~a_nan).any():
        i = _index(int((e_nan & ~a_nan).flatten().nonzero()[0]), tuple(a.shape))
        return f"expected NaN at index {i} (as the reference gives), got {_num(a[i].item())}"
    both_inf = torch.isinf(a) & torch.isinf(e) & (torch.sign(a) == torch.sign(e))
    diff = torch.where(both_inf | (a_nan & e_nan), torch.zeros_like(a), (a - e).abs())
    allowed = atol + rtol * torch.where(torch.isinf(e) | e_nan, torch.zeros_like(e), e.abs())
    bad = ~(diff <= allowed)
    if not bad.any():
        return None
    excess = torch.where(bad, diff, torch.zeros_like(diff))
    i = _index(int(excess.flatten().argmax()), tuple(a.shape))
    where = f" at index {i}" if i else ""
    count = f"; {int(bad.sum())} of {a.numel()} entries differ" if a.numel() > 1 else ""
    if a.dtype.is_floating_point and actual.dtype.is_floating_point:
        return (f"max abs error {_num(diff[i].item())}{where}: got {_num(a[i].item())}, expected "
                f"{_num(e[i].item())} (tolerance {atol:g} + {rtol:g}·|expected|){count}")
    return f"values differ{where}: got {_num(a[i].item())}, expected {_num(e[i].item())}{count}"


def _resolve(mistakes: Mapping[str, Any] | None) -> Iterator[tuple[str, Any]]:
    for description, produce in (mistakes or {}).items():
        try:
            yield description, produce() if callable(produce) else produce
        except Exception:  # noqa: BLE001 -- a mistake that does not apply to these inputs
            continue


# Set where hidden tests are being proved (`llmgrade selfcheck`, the project's own tests).
PROVE_TOLERANCES = "LLMGRADE_PROVE_TOLERANCES"


def assert_outside(expected: Any, mistakes: Mapping[str, Any] | None, atol: float,
                   rtol: float | None = None) -> None:
    """The grader's own check, where a derived tolerance widened the elementwise one: every named
    mistake must still fail the comparison, else the test could not tell it from a right answer.
    A mistake these inputs cannot produce (it raises) is passed over, as `_resolve` does.

    It runs only where the tests are proved (LLMGRADE_PROVE_TOLERANCES=1: selfcheck and the
    project's tests, on CPU and CUDA): the inputs and tolerances are the same for every
    submission, so a student's grading would learn nothing new from it, and it computes every
    mistake (0.7 s of a cross-entropy grading)."""
    if os.environ.get(PROVE_TOLERANCES) != "1":
        return
    for description, value in _resolve(mistakes):
        assert tensor_mismatch(value, expected, atol=atol, rtol=rtol) is not None, \
            f"grader: the mistake {description!r} lies within the tolerance {atol:g}"


def _fail(what: str, problem: str, actual: Any, mistakes, matches: Callable[[Any, Any], bool]):
    for description, buggy in _resolve(mistakes):
        if matches(actual, buggy):
            raise CheckFailure(f"{what}: looks like {description}\n({problem})")
    raise CheckFailure(f"{what}: {problem}")


def expect_close(actual: Any, expected: torch.Tensor, *, what: str,
                 mistakes: Mapping[str, Any] | None = None, atol: float | None = None,
                 rtol: float | None = None, check_dtype: bool = True,
                 check_device: bool = True, equal_nan: bool = False) -> None:
    """Fail with feedback unless tensor `actual` matches `expected` (see module doc).

    `mistakes` maps a description of a known mistake to what it would produce
    here (or to a function computing that, called only on failure).
    """
    options = dict(atol=atol, rtol=rtol, check_dtype=check_dtype, check_device=check_device,
                   equal_nan=equal_nan)
    problem = tensor_mismatch(actual, expected, **options)
    if problem is not None:
        _fail(what, problem, actual, mistakes, lambda a, b: isinstance(b, torch.Tensor)
              and tensor_mismatch(a, b, **options) is None)


def as_scalar(value: Any) -> float | None:
    """A Python number, a numpy scalar or a one-element tensor as a float; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.number)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.item())
    return None


def expect_scalar(actual: Any, expected: float, *, what: str, atol: float = 1e-6,
                  rtol: float = 1e-5, mistakes: Mapping[str, Any] | None = None) -> None:
    """Fail unless `actual` is a number (or one-element tensor) close to `expected`."""
    value = as_scalar(actual)

    def close(got: float | None, want: Any) -> bool:
        want = as_scalar(want)
        if got is None or want is None:
            return False
        if math.isnan(want) or math.isinf(want):
            return got == want or (math.isnan(want) and math.isnan(got))
        return abs(got - want) <= atol + rtol * abs(want)

    if value is None:
        _fail(what, f"expected a number, got {describe(actual)}", actual, None, None)
    if not close(value, expected):
        problem = f"got {_num(value)}, expected {_num(expected)}"
        _fail(what, problem, value, mistakes, close)


def expect_equal(actual: Any, expected: Any, *, what: str,
                 mistakes: Mapping[str, Any] | None = None) -> None:
    """Fail unless `actual == expected` exactly (lists, dicts, strings, numbers)."""
    problem = equality_mismatch(actual, expected)
    if problem is not None:
        _fail(what, problem, actual, mistakes, lambda a, b: equality_mismatch(a, b) is None)


def equality_mismatch(actual: Any, expected: Any) -> str | None:
    if isinstance(expected, torch.Tensor):
        if not isinstance(actual, torch.Tensor):
            return f"expected a tensor, got {describe(actual)}"
        return tensor_mismatch(actual, expected, atol=0, rtol=0)
    if type(actual) is not type(expected) and not (
            isinstance(expected, (int, float)) and isinstance(actual, (int, float))
            and not isinstance(actual, bool)):
        return f"expected {describe(expected)}, got {describe(actual)}"
    if isinstance(expected, dict):
        missing = [k for k in expected if k not in actual]
        if missing:
            return f"missing key {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        extra = [k for k in actual if k not in expected]
        if extra:
            return f"unexpected key {extra[0]!r}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        for key in expected:
            problem = equality_mismatch(actual[key], expected[key])
            if problem is not None:
                return f"at key {key!r}: {problem}"
        return None
    if isinstance(expected, (list, tuple)):
        for i, (a, e) in enumerate(zip(actual, expected)):
            problem = equality_mismatch(a, e)
            if problem is not None:
                return f"at position {i}: {problem}"
        if len(actual) != len(expected):
            return f"expected {len(expected)} items, got {len(actual)}"
        return None
    if actual != expected:
        return f"got {actual!r}, expected {expected!r}"
    return None


@contextlib.contextmanager
def expect_raises(exception: str, *, what: str):
    """The block must raise `exception` (a class name, subclasses accepted) from student code."""
    try:
        yield
    except StudentCodeError as exc:
        if exc.is_a(exception):
            return
        if exc.type_name is None:  # a timeout or crash, not an exception
            raise
        if exc.is_a("NotImplementedError"):
            raise CheckFailure(f"{what} should raise {exception}, but it is not implemented yet") from None
        message = getattr(exc.cause, "message", str(exc.cause))
        raise CheckFailure(f"{what} should raise {exception}, but raised {exc.type_name}"
                           + (f": {message[:300]}" if message else "")) from None
    raise CheckFailure(f"{what} should raise {exception}, but it returned normally")


def _a(kind: str) -> str:
    return ("an " if kind[:1] in "aeiou" else "a ") + kind


def expect_tensor(value: Any, *, what: str, shape: tuple[int, ...] | torch.Size | None = None,
                  dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Fail unless `value` is a tensor (of `shape`, of `dtype`, on `device`'s type: each when given);
    return it. The check before using a result as a tensor:

        expect_tensor(y, what="MultiHeadAttention(8, 2)(x (2, 5, 8))", shape=(2, 5, 8))
        -> "MultiHeadAttention(8, 2)(x (2, 5, 8)): expected a tensor of shape (2, 5, 8),
            got a torch.float32 tensor of shape (2, 8, 5) on cpu"
    """
    want = f"{dtype} tensor" if dtype is not None else "tensor"
    if shape is not None:
        want += f" of shape {tuple(shape)}"
    if device is not None:
        want += f" on {torch.device(device).type}"
    if not (isinstance(value, torch.Tensor)
            and (shape is None or tuple(value.shape) == tuple(shape))
            and (dtype is None or value.dtype == dtype)
            and (device is None or value.device.type == torch.device(device).type)):
        raise CheckFailure(f"{what}: expected {_a(want)}, got {describe(value)}")
    return value


def expect_sequence(value: Any, names: tuple[str, ...] | list[str], *, what: str,
                    types: tuple[type, ...] = (tuple, list)) -> Any:
    """Fail unless `value` is a tuple (or another of `types`) of exactly len(`names`) items; return it.
    For functions that return several things:

        output, weights = expect_sequence(result, ("output", "weights"), what="sdpa(q, k, v)")
        -> "sdpa(q, k, v): must return a tuple (output, weights), got a torch.float32 tensor of ..."
    """
    if not isinstance(value, types) or len(value) != len(names):
        got = describe(value) + (f" of {len(value)} items" if isinstance(value, (tuple, list)) else "")
        raise CheckFailure(f"{what}: must return a {types[0].__name__} ({', '.join(names)}), got {got}")
    return value


def expect_type(value: Any, kind: type | tuple[type, ...], *, what: str) -> Any:
    """Fail unless `value` is an instance of `kind` (a class or a tuple of classes); return it.

        expect_type(result, dict, what="train(...)")  -> "train(...): expected a dict, got a list"
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds):
        want = " or ".join(_a(k.__name__) for k in kinds)
        raise CheckFailure(f"{what}: expected {want}, got {describe(value)}")
    return value
