"""Hidden tests of stage `cross_entropy`: softmax and log_softmax (handout 03-cross_entropy.md).

The expected values come from torch.softmax / torch.log_softmax in float64 in the
grading process (they are banned only in the student's worker). Each known
mistake is written next to the test that recognises it, as what the buggy code
would return for the same inputs.
"""

import pytest
import torch

from grader.testing import (CheckFailure, StudentCodeError, backward, expect_close, expect_tensor, randn,
                            reduction_atol)

from cross_entropy_checks import assert_outside, expect_close_large, lse_atol  # this folder's helpers

FUNCTIONS = ["softmax", "log_softmax"]

# (shape, dim); dim None means "call with the default dim" (the last one).
CASES = {
    "(4, 6), default dim": ((4, 6), None),
    "(4, 6), dim=-1 passed explicitly": ((4, 6), -1),
    "(5, 3), dim=0": ((5, 3), 0),
    "(2, 4, 3), dim=1": ((2, 4, 3), 1),
}


def exact(fn: str, x: torch.Tensor, dim: int) -> torch.Tensor:
    """The float64 CPU answer for the values of `x` (whatever its dtype and device)."""
    x = x.detach().cpu().double()
    return torch.softmax(x, dim) if fn == "softmax" else torch.log_softmax(x, dim)


def like(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`value` in the dtype and on the device of `x`, as the student's result must be."""
    return value.to(dtype=x.dtype, device=x.device)


def call(student, fn: str, x: torch.Tensor, dim: int | None):
    f = getattr(student.cross_entropy, fn)
    return f(x) if dim is None else f(x, dim)


def call_text(fn: str, shape, dtype: torch.dtype, dim: int | None, extra: str = "") -> str:
    args = f"{extra}logits {tuple(shape)} {str(dtype).removeprefix('torch.')}"
    return f"{fn}({args})" if dim is None else f"{fn}({args}, dim={dim})"


# ---- known mistakes, as what they would produce -------------------------------

def mistake_formulas(fn: str, dim: int, ndim: int) -> dict:
    """description -> what that known mistake computes from float64 logits (differentiable, so
    the gradient tests can name the same mistakes)."""
    other = "log_softmax" if fn == "softmax" else "softmax"
    ref = {"softmax": torch.softmax, "log_softmax": torch.log_softmax}   # `exact` would detach
    found = {}
    if dim not in (-1, ndim - 1):
        found[f"the {fn} is taken over the last dimension instead of over `dim`"] = lambda x: ref[fn](x, -1)
    found[f"the {fn} is normalised over the whole tensor instead of along `dim`"] = \
        lambda x: ref[fn](x.flatten(), 0).view_as(x)
    found[f"{fn} returns the {other} instead"] = lambda x: ref[other](x, dim)
    if fn == "log_softmax":
        found["the max is subtracted inside the exp but not added back: log_softmax(x) = "
              "x - max - log(sum(exp(x - max)))"] = \
            lambda x: x - (x - x.amax(dim, keepdim=True).detach()).exp().sum(dim, keepdim=True).log()
        found["the log-sum-exp is not subtracted: log_softmax(x) = x - max - log(sum(exp(x - max)))"] = \
            lambda x: x - x.amax(dim, keepdim=True).detach()
    else:
        found["the exponentials are not divided by their sum along `dim`"] = \
            lambda x: (x - x.amax(dim, keepdim=True).detach()).exp()
    return found


def value_mistakes(fn: str, x: torch.Tensor, dim: int) -> dict:
    """description -> what that known mistake returns for `x`, in x's dtype and device."""
    x64 = x.detach().cpu().double()
    return {d: (lambda f=f: like(f(x64), x)) for d, f in mistake_formulas(fn, dim, x.dim()).items()}


def gradient_mistakes(fn: str, x64: torch.Tensor, dim: int, grad_out: torch.Tensor, x: torch.Tensor) -> dict:
    """description -> the gradient that known mistake gives for float64 logits `x64` and
    `grad_out`, in the dtype and device of `x`."""
    def grad_of(f):
        leaf = x64.detach().clone().requires_grad_()
        return like(torch.autograd.grad(f(leaf), leaf, grad_out)[0], x)
    return {d: (lambda f=f: grad_of(f)) for d, f in mistake_formulas(fn, dim, x64.dim()).items()}


def overflow_mistakes(fn: str, x: torch.Tensor, dim: int) -> dict:
    """What float32 code without the max-subtraction trick (or via log(softmax)) returns."""
    stable = (x - x.amax(dim, keepdim=True)).exp()
    stable = stable / stable.sum(dim, keepdim=True)
    if fn == "softmax":
        return {"the max is not subtracted before exp: exp overflows to inf for large logits "
                "and inf / inf is NaN (subtract the max along `dim` first)":
                lambda: x.exp() / x.exp().sum(dim, keepdim=True)}
    return {"the max is not subtracted before exp: exp overflows to inf for large logits "
            "(compute x - max - log(sum(exp(x - max))))":
            lambda: x - x.exp().sum(dim, keepdim=True).log(),
            "the max is subtracted inside the exp but not added back: log_softmax(x) = "
            "x - max - log(sum(exp(x - max)))":
            lambda: x - (x - x.amax(dim, keepdim=True)).exp().sum(dim, keepdim=True).log(),
            "log_softmax is computed as log(softmax(x)): probabilities that underflow to 0 "
            "give -inf (compute x - max - log(sum(exp(x - max))) directly)":
            lambda: stable.log()}


# ---- values -------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fn", FUNCTIONS)
def test_values(student, device, fn, case):
    """{fn} values for logits {case}, float32 and float64"""
    shape, dim = CASES[case]
    for seed, dtype in enumerate((torch.float32, torch.float64)):
        x = randn(shape, seed=seed, dtype=torch.float64, scale=2.0).to(dtype=dtype, device=device)
        d = -1 if dim is None else dim
        expect_close(call(student, fn, x, dim), like(exact(fn, x, d), x),
                     what=call_text(fn, shape, dtype, dim), mistakes=value_mistakes(fn, x, d))


def test_softmax_sums_to_one(student, device):
    """softmax is in [0, 1] and sums to 1 along dim (dim=-1 and dim=0 of (3, 4, 5))"""
    x = randn((3, 4, 5), seed=7, dtype=torch.float64, scale=5.0).to(dtype=torch.float32, device=device)
    for dim in (-1, 0):
        p = student.cross_entropy.softmax(x, dim)
        what = call_text("softmax", x.shape, x.dtype, dim)
        expect_tensor(p, what=what, shape=x.shape)
        if not ((p >= 0) & (p <= 1)).all():
            raise CheckFailure(f"{what}: some probabilities are not in [0, 1] (or are NaN)")
        sums = p.double().sum(dim)
        # Each p = e / S carries S's relative error (γ_{C+4}, any order) and two roundings, so the
        # sum of C of them is within γ_{C+6} of 1: 6e-7 for C = 5 or 3, under the 1e-5 used. Not
        # dividing by the sum gives sums of 1.1 or more.
        atol = max(1e-5, reduction_atol(x.shape[dim], 1.0, term_ulps=6))
        expect_close(sums, torch.ones_like(sums), atol=atol, rtol=0,
                     what=f"the sums of {what} along dim={dim}",
                     mistakes={d: (lambda f=f: f(x.double()).sum(dim).to(device))
                               for d, f in mistake_formulas("softmax", dim, x.dim()).items()})


# ---- large logits: the max-subtraction trick ----------------------------------

# "1e4 + N(0, 1)" catches a missing max subtraction only; "uniform in [-80, 80]" catches
# log(softmax(x)) only (no float32 overflow there, but probabilities below 1e-45); N(0, 1e4) both.
LARGE = {
    "1e4 + N(0, 1)": lambda g: 1e4 + torch.randn((4, 6), generator=g, dtype=torch.float64),
    "-1e4 + N(0, 1)": lambda g: -1e4 + torch.randn((4, 6), generator=g, dtype=torch.float64),
    "uniform in [-80, 80]": lambda g: torch.rand((4, 6), generator=g, dtype=torch.float64) * 160 - 80,
    "N(0, 1e4)": lambda g: torch.randn((4, 6), generator=g, dtype=torch.float64) * 1e4,
}


def large_tolerance(fn: str, x: torch.Tensor) -> dict:
    """Honest float32 drift grows with the logits: x - (max + log(sum(exp(x - max)))), a correct
    formulation, rounds max + log(...) to a few ulps of |max|, about 1e-3 at 1e4. That error is
    absolute for log-probabilities and relative for probabilities."""
    drift = 8 * torch.finfo(torch.float32).eps * x.abs().max().item()
    return {"atol": 1e-5 + drift, "rtol": 1e-4} if fn == "log_softmax" else {"atol": 1e-5, "rtol": 1e-4 + drift}


@pytest.mark.points(2)
@pytest.mark.parametrize("fn", FUNCTIONS)
def test_large_logits(student, device, fn):
    """{fn} is finite and correct for float32 logits as large as 1e4"""
    for seed, (name, make) in enumerate(LARGE.items()):
        x = make(torch.Generator().manual_seed(100 + seed)).to(dtype=torch.float32, device=device)
        for dim in (-1, 0):
            what = call_text(fn, x.shape, x.dtype, dim) + f" with logits {name}"
            expect_close_large(call(student, fn, x, dim), like(exact(fn, x, dim), x), what=what,
                               mistakes=value_mistakes(fn, x, dim) | overflow_mistakes(fn, x, dim),
                               **large_tolerance(fn, x),
                               hint="the result is not finite: subtract the max along `dim` before exp")


# ---- a large vocabulary: the sum over 50257 classes ---------------------------------

@pytest.mark.points(2)
@pytest.mark.parametrize("fn", FUNCTIONS)
def test_large_vocabulary(student, device, fn):
    """{fn} over GPT-2's 50257 classes, float32 logits (4, 50257)"""
    # S = sum of 50257 exps, in float32 in any order, is within γ_50261 = 3.0e-3 relative of the
    # exact sum (lse_atol adds the final subtractions' roundings, ~1e-5): that is the atol of
    # log_softmax and the rtol of softmax (probabilities carry S's relative error), against
    # 1e-5 and 1e-4 elementwise. The named mistakes lie far outside (asserted below): log-probs
    # normalised over the whole tensor are log 4 = 1.4 off, without the log-sum-exp ~4, the max
    # not added back ~9; softmax over the whole tensor is 4x too small, unnormalised ~70x too big,
    # and each function returning the other is off by ~13 (or more).
    x = randn((4, 50257), seed=150, dtype=torch.float64, scale=2.0).to(dtype=torch.float32, device=device)
    bound = lse_atol(x)
    tolerance = {"atol": max(1e-5, bound), "rtol": 1e-4} if fn == "log_softmax" else \
        {"atol": 1e-5, "rtol": max(1e-4, bound)}
    expected = like(exact(fn, x, -1), x)
    mistakes = value_mistakes(fn, x, -1)
    assert_outside(expected, mistakes, **tolerance)
    expect_close(call(student, fn, x, None), expected, what=call_text(fn, x.shape, x.dtype, None),
                 mistakes=mistakes, **tolerance)


# ---- gradients ----------------------------------------------------------------

@pytest.mark.points(2)
@pytest.mark.parametrize("fn", FUNCTIONS)
def test_gradients(student, device, fn):
    """{fn} gradients match autograd's (float32 and float64, dim=-1 and dim=1)"""
    f = getattr(student.cross_entropy, fn)
    for seed, (dtype, shape, dim) in enumerate([(torch.float32, (5, 7), -1), (torch.float64, (5, 7), -1),
                                                (torch.float32, (2, 4, 3), 1),
                                                (torch.float64, (2, 4, 3), 1)]):
        x64 = randn(shape, seed=20 + seed, dtype=torch.float64, scale=2.0).requires_grad_()
        grad_out = randn(shape, seed=40 + seed, dtype=torch.float64, scale=1.0)
        oracle = torch.softmax if fn == "softmax" else torch.log_softmax
        expected, = torch.autograd.grad(oracle(x64, dim), x64, grad_out)
        x = x64.detach().to(dtype=dtype, device=device).requires_grad_()
        what = "the gradient of " + call_text(fn, shape, dtype, dim)
        try:
            result = backward(f, x, dim, grad_output=grad_out.to(dtype=dtype, device=device))
        except StudentCodeError as exc:
            if "does not require grad" in str(exc):
                raise CheckFailure(f"{what}: looks like the result is detached from the graph "
                                   f"(no gradient reaches the logits)\n({exc})") from None
            raise
        if result.input_grads[0] is None:
            raise CheckFailure(f"{what}: no gradient reached the logits (is the result detached?)")
        expect_close(result.input_grads[0], like(expected, x), what=what,
                     mistakes=gradient_mistakes(fn, x64, dim, grad_out, x))
