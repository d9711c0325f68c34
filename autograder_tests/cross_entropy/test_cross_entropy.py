"""Hidden tests of stage `cross_entropy`: the loss, its gradients, perplexity, banned APIs.

The oracle is F.cross_entropy(logits.reshape(-1, C), targets.reshape(-1), ...) in
float64 in the grading process (it is banned only in the student's worker).
Each known mistake is a variant of `by_hand` (cross_entropy_mistakes.py), computed in
float64 on the same inputs; its gradient comes from autograd through the same variant.

Tolerances: the elementwise one, widened where the sums of the loss need more
(cross_entropy_checks.loss_atol: the log-sum-exp over C classes, the smoothing mean over
C, the sum or mean over N positions; float32 in any order). Error carried forward: the loss
of a submission whose log_softmax is wrong is accepted when it is exactly the contract's
loss of ITS OWN log-probabilities (read back from its log_softmax; the gradient likewise,
through its log_softmax's backward), since the log_softmax tests charge that mistake.
"""

import math

import pytest
import torch

from grader.testing import (CheckFailure, StudentCodeError, backward, describe, expect_close,
                            expect_own_code_without_banned_apis, expect_raises, expect_scalar,
                            tensor_mismatch, tolerance)

from cross_entropy_checks import (assert_outside, carried_forward, carried_gradient,  # this folder's helpers
                                  expect_close_large, loss_atol, own_log_softmax)
from cross_entropy_mistakes import (by_hand, describe_call, expect_not_a_number, like, loss_mistakes, make,
                                    mistakes_for, oracle, wrong_shape)

REDUCTIONS = ["mean", "sum", "none"]
SHAPES = [(8, 5), (2, 4, 5)]   # (N, C) and (B, T, C); B, T and C all differ

FLOAT32_INSIDE = ("the loss is computed in float32 (the logits are cast to float32): float64 logits must "
                  "give a float64 loss, and float64 gradients of float64 precision")


def check_loss(student, x, targets, what=None, indistinguishable=(), **kwargs) -> None:
    """The student's loss for (x, targets, **kwargs) must match F.cross_entropy's.

    `indistinguishable`: knobs of `by_hand` whose mistakes these inputs cannot show (they lie
    within the tolerance); they are not named here, other tests charge them."""
    what = what or describe_call(x, targets, kwargs)
    got = student.cross_entropy.cross_entropy(x, targets, **kwargs)
    expect_not_a_number(got, what)
    options = {k: kwargs[k] for k in ("ignore_index", "reduction", "label_smoothing") if k in kwargs}
    mistakes = loss_mistakes(x, targets, options, indistinguishable)
    expected = like(oracle(x, targets, **options), x)
    if x.dtype == torch.float64:
        mistakes[FLOAT32_INSIDE] = lambda: expected.float()
    atol, rtol = loss_atol(x, targets, **options), tolerance(x.dtype, x.device)[1]
    if atol > tolerance(x.dtype, x.device)[0]:   # the sums widened the tolerance: is every mistake still out?
        assert_outside(expected, mistakes, atol)
    try:
        expect_close(got, expected, what=what, mistakes=mistakes, atol=atol)
    except CheckFailure as failure:
        note = carried_forward(student, x, targets, got, options, atol, rtol)
        if note == "":
            return   # the contract's loss of the student's own log_softmax: charged there
        if note:
            raise CheckFailure(f"{failure}\n({note})") from None
        raise


def check_gradient(student, x64, targets, dtype, device, grad_seed: int, **kwargs) -> torch.Tensor:
    """The gradient of the student's loss w.r.t. the logits must match F.cross_entropy's; returns it."""
    what = "the gradient of " + describe_call(x64.to(dtype), targets, kwargs)
    options = {k: kwargs[k] for k in ("ignore_index", "reduction", "label_smoothing") if k in kwargs}
    shape = targets.shape if options.get("reduction") == "none" else ()
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)

    def grad_of(**knobs):
        leaf = x64.detach().clone().requires_grad_()
        loss = by_hand(leaf, targets, **(options | knobs)) if knobs else oracle(leaf, targets, **options)
        return torch.autograd.grad(loss, leaf, grad_out.reshape(loss.shape))[0]

    x = x64.detach().to(dtype=dtype, device=device).requires_grad_()
    try:
        result = backward(student.cross_entropy.cross_entropy, x, targets.to(device),
                          grad_output=grad_out.to(dtype=dtype, device=device), **kwargs)
    except StudentCodeError as exc:
        text = str(exc)
        if "expected a tensor to run backward on" in text:
            raise CheckFailure(f"{what}: looks like the loss is returned as a Python number; it "
                               f"must be a tensor for gradients to flow\n({text})") from None
        if "Mismatch in shape" in text:
            raise CheckFailure(f"{what}: {wrong_shape(student, x.detach(), targets.to(device), kwargs)}the "
                               f"loss has the wrong shape: backward with a grad_output shaped "
                               f"{tuple(shape)} failed\n({text})") from None
        if "does not require grad" in text:
            raise CheckFailure(f"{what}: looks like the loss is detached from the graph (.item(), "
                               f"torch.tensor(...) or .detach()): no gradient reaches the logits\n"
                               f"({text})") from None
        raise
    grad = result.input_grads[0] if result.input_grads else None
    if grad is None:
        raise CheckFailure(f"{what}: no gradient reached the logits (is the loss detached?)")
    mistakes = {d: (lambda knobs=knobs: like(grad_of(**knobs), x))
                for d, knobs in mistakes_for(x64, targets, **options).items() if "flat" not in knobs}
    try:
        expect_close(grad, like(grad_of(), x), what=what, mistakes=mistakes)
    except CheckFailure as failure:
        if dtype == torch.float64 and isinstance(grad, torch.Tensor) and tensor_mismatch(
                grad, like(grad_of(), x), atol=1e-5, rtol=1e-4) is None:
            # within float32's tolerance but not float64's: float32 precision, the computation
            # ran in float32 (a float64 formulation in any order is ~1e-16 relative off)
            raise CheckFailure(f"{what}: looks like {FLOAT32_INSIDE}\n({failure})") from None
        x_plain = x.detach()
        carried = carried_gradient(student, x_plain, targets.to(device), grad_out, options)
        if carried is not None and isinstance(grad, torch.Tensor) and grad.shape == carried.shape and \
                torch.allclose(grad.detach().cpu().double(), carried, atol=tolerance(dtype, device)[0],
                               rtol=tolerance(dtype, device)[1]):
            return grad   # the contract's gradient through the student's own log_softmax: charged there
        own = own_log_softmax(student, x_plain)
        exact = x64.detach() - torch.logsumexp(x64.detach(), -1, keepdim=True)
        if own is not None and not torch.allclose(own, exact, atol=1e-4, rtol=1e-4):
            raise CheckFailure(f"{failure}\n(note: your log_softmax(logits, dim=-1) is also off on these "
                               "logits; that is charged by the log_softmax tests)") from None
        raise
    return grad


# ---- values -------------------------------------------------------------------

@pytest.mark.points(2)
def test_hand_example(student, device):
    """cross_entropy of the handout's three rows, one target ignored (default arguments)"""
    x = torch.tensor([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]], device=device)
    targets = torch.tensor([0, 1, -100], device=device)
    check_loss(student, x, targets, what="cross_entropy(handout logits, targets [0, 1, -100])")


@pytest.mark.points(2)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reduction(student, device, reduction):
    """cross_entropy values with reduction='{reduction}', (N, C) and (B, T, C), float32 and float64"""
    for seed, shape in enumerate(SHAPES):
        for dtype in (torch.float32, torch.float64):
            x, targets = make(shape, seed)
            check_loss(student, x.to(dtype=dtype, device=device), targets.to(device), reduction=reduction)


@pytest.mark.points(2)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ignore_index(student, device, reduction):
    """cross_entropy with reduction='{reduction}' skips targets equal to ignore_index"""
    for seed, shape in enumerate(SHAPES):
        x, targets = make(shape, 10 + seed, ignored=3)   # the default ignore_index, -100
        check_loss(student, x.float().to(device), targets.to(device), reduction=reduction)
        x, targets = make(shape, 20 + seed, ignored=2, ignore_index=1)   # a real class id
        check_loss(student, x.float().to(device), targets.to(device), ignore_index=1, reduction=reduction)


@pytest.mark.points(1)
def test_defaults_passed_explicitly(student, device):
    """cross_entropy with ignore_index=-100, reduction='mean', label_smoothing=0.0 passed explicitly"""
    x, targets = make(SHAPES[1], 15, ignored=2)
    check_loss(student, x.float().to(device), targets.to(device), ignore_index=-100, reduction="mean",
               label_smoothing=0.0)
    check_loss(student, x.float().to(device), targets.to(device), label_smoothing=0.0)


VOCAB = 50257   # GPT-2's vocabulary


@pytest.mark.points(2)
def test_loss_large_vocabulary(student, device):
    """cross_entropy over GPT-2's 50257 classes, float32 logits (4, 8, 50257): mean, sum, none, smoothing"""
    # The float32 log-sum-exp adds 50257 terms: in any order within γ_50261 = 3.0e-3 of the exact
    # one (cross_entropy_checks.lse_atol), so the atol grows from 1e-5 to 3.0e-3 ('none', 'mean':
    # mean |loss| ≈ 12.8 over 32 positions adds γ_36·12.8 = 2.7e-5), 0.097 for 'sum' (32 lse
    # bounds + γ_36·Σ|loss|, Σ ≈ 405) and 7.2e-3 with label smoothing 0.1 (+ eps·(γ_50261·mean
    # |log p| + the lse bound)). The named mistakes lie far outside (check_loss asserts it): not
    # negated 25.6, dim 1 9.3, sum vs mean 397 (sum vs mean for 'sum': 393), / C 12.8, / B 90,
    # ignored positions counted 2.1, smoothing ignored 0.057, not masked 0.24, no (1 - eps) 1.3,
    # summed over classes 6e4. Two smoothing mistakes cannot show at C = 50257 and are not named:
    # eps/(C-1) for the other classes (1.1e-6 away) and the target left out (2.7e-5); the (8, 5)
    # and (2, 4, 5) tests charge them.
    cases = [("mean", {}, 0), ("sum", {}, 0), ("none", {}, 0), ("mean", {"label_smoothing": 0.1}, 5)]
    for seed, (reduction, extra, ignored) in enumerate(cases):
        x, targets = make((4, 8, VOCAB), 130 + seed, ignored=ignored)
        check_loss(student, x.float().to(device), targets.to(device), reduction=reduction,
                   indistinguishable=("others_c_minus_1", "others_over_c"), **extra)


def all_ignored_hint(student, device) -> str:
    """Why a 'mean' over no counted target gives 0 instead of NaN: a known mistake of the mean's
    denominator (0 / 6 or a plain sum) when the student's mean on inputs with counted targets
    shows it, else a special case of "no target counted"."""
    x, targets = make((2, 3, 4), 31, ignored=2)
    x, targets = x.float().to(device), targets.to(device)
    try:
        got = student.cross_entropy.cross_entropy(x, targets, reduction="mean")
    except StudentCodeError:
        got = None
    if isinstance(got, torch.Tensor) and tensor_mismatch(got, like(oracle(x, targets), x)) is not None:
        for description, knobs in mistakes_for(x, targets).items():
            if "denominator" in knobs and tensor_mismatch(got, like(by_hand(x, targets, **knobs), x)) is None:
                return f"looks like {description}: with no counted target that gives 0; "
    return "looks like the mean is special-cased when no target is counted; "


def test_all_ignored(student, device):
    """cross_entropy with every target ignored: NaN for 'mean' (0 / 0), 0 for 'sum', zeros for 'none'"""
    x, targets = make((2, 3, 4), 30, ignored=6)
    x, targets = x.float().to(device), targets.to(device)
    for reduction in ("sum", "none"):
        check_loss(student, x, targets, reduction=reduction)
    what = describe_call(x, targets, {"reduction": "mean"})
    got = student.cross_entropy.cross_entropy(x, targets, reduction="mean")
    if not isinstance(got, torch.Tensor) or got.shape != () or got.dtype != x.dtype or got.device != x.device:
        raise CheckFailure(f"{what}: expected a 0-dim float32 tensor on {device} (NaN), got {describe(got)}")
    if not torch.isnan(got):
        hint = all_ignored_hint(student, device) if got.item() == 0 else ""
        raise CheckFailure(f"{what}: {hint}expected NaN, as F.cross_entropy gives (0 / 0: no target is "
                           f"counted), got {got.item():.6g}")


@pytest.mark.points(2)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_label_smoothing(student, device, reduction):
    """cross_entropy with label_smoothing 0.1 and 0.3, reduction='{reduction}'"""
    for seed, (shape, eps) in enumerate([(SHAPES[0], 0.1), (SHAPES[1], 0.3)]):
        for dtype in (torch.float32, torch.float64):
            x, targets = make(shape, 40 + seed)
            check_loss(student, x.to(dtype=dtype, device=device), targets.to(device),
                       reduction=reduction, label_smoothing=eps)


@pytest.mark.points(2)
def test_label_smoothing_with_ignore(student, device):
    """cross_entropy with label_smoothing 0.2 and ignored targets (mean, sum and none)"""
    x, targets = make(SHAPES[1], 50, ignored=3)
    for reduction in REDUCTIONS:
        check_loss(student, x.float().to(device), targets.to(device), reduction=reduction, label_smoothing=0.2)
    x, targets = make(SHAPES[0], 51, ignored=2, ignore_index=0)
    check_loss(student, x.float().to(device), targets.to(device), ignore_index=0, label_smoothing=0.2)


@pytest.mark.points(2)
def test_loss_large_logits(student, device):
    """cross_entropy is finite and correct for float32 logits as large as 1e4"""
    # Offset cases first: they tell "no max subtraction" from "log(softmax(x))", which both give
    # an infinite mean loss for N(0, 1e4) logits.
    cases = {"1e4 + N(0, 1)": (1e4, 1.0), "-1e4 + N(0, 1)": (-1e4, 1.0), "N(0, 1e4)": (0.0, 1e4)}
    for seed, (name, (offset, scale)) in enumerate(cases.items()):
        x, targets = make((2, 3, 6), 60 + seed, scale=scale)
        x = (x + offset).float().to(device)
        for reduction in ("none", "mean"):
            what = describe_call(x, targets, {"reduction": reduction}) + f" with logits {name}"
            got = student.cross_entropy.cross_entropy(x, targets.to(device), reduction=reduction)
            expect_not_a_number(got, what)
            naive = lambda: x.exp().sum(-1).log() - x.gather(-1, targets.to(device).unsqueeze(-1)).squeeze(-1)  # noqa: E731
            via_softmax = lambda: -((x - x.amax(-1, keepdim=True)).exp() / (x - x.amax(-1, keepdim=True)).exp()  # noqa: E731
                                    .sum(-1, keepdim=True)).log().gather(-1, targets.to(device).unsqueeze(-1)).squeeze(-1)
            reduce = (lambda v: v.mean()) if reduction == "mean" else (lambda v: v)  # noqa: E731
            # honest float32 drift: x - (max + log(...)) rounds to a few ulps of |max|
            atol = 1e-5 + 8 * torch.finfo(torch.float32).eps * x.abs().max().item()
            try:
                expect_close_large(got, like(oracle(x, targets, reduction=reduction), x), what=what, mistakes={
                    "the loss uses log(softmax(x)): probabilities that underflow to 0 give an infinite "
                    "loss (use log_softmax = x - max - log(sum(exp(x - max))))": lambda: reduce(via_softmax()),
                    "the max is not subtracted before exp: exp overflows to inf for large logits "
                    "(subtract the max logit of each row first)": lambda: reduce(naive()),
                    # the mistakes the (8, 5) and (2, 4, 5) tests name show here too (0.49 or more away)
                    **loss_mistakes(x, targets, {"reduction": reduction})},
                    hint="the loss is not finite: subtract the max logit of each row before exp", atol=atol)
            except CheckFailure as failure:
                note = carried_forward(student, x, targets.to(device), got, {"reduction": reduction}, atol, 1e-4)
                if note == "":
                    continue   # the loss of the student's own (overflowing) log_softmax: charged there
                raise CheckFailure(f"{failure}\n({note})" if note else str(failure)) from None


def test_rejects_unknown_reduction(student, device):
    """cross_entropy raises ValueError for reduction='avg'"""
    x, targets = make((3, 4), 70)
    with expect_raises("ValueError", what="cross_entropy(logits, targets, reduction='avg')"):
        student.cross_entropy.cross_entropy(x.float().to(device), targets.to(device), reduction="avg")


# ---- gradients ----------------------------------------------------------------

@pytest.mark.points(2)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_loss_gradients(student, device, reduction):
    """cross_entropy gradients w.r.t. the logits with reduction='{reduction}' (ignore_index, label_smoothing)"""
    cases = [(SHAPES[0], {}, 0), (SHAPES[1], {}, 3), (SHAPES[1], {"label_smoothing": 0.1}, 0),
             (SHAPES[0], {"label_smoothing": 0.2}, 2)]
    for seed, (shape, extra, ignored) in enumerate(cases):
        x64, targets = make(shape, 80 + seed, ignored=ignored)
        for dtype in (torch.float32, torch.float64):
            check_gradient(student, x64, targets, dtype, device, grad_seed=90 + seed,
                           reduction=reduction, **extra)


@pytest.mark.points(2)
def test_gradcheck_float64(student, device):
    """cross_entropy passes a float64 gradcheck (its gradients vs PyTorch's and vs central differences)

    What gradcheck checks, done across the worker boundary: for reduction='none' with an ignored
    target and label_smoothing 0.1, the vector-Jacobian products from backward for 3 random
    grad_outputs must equal F.cross_entropy's at float64 tolerance, and must agree with central
    finite differences (h = 1e-6) of the student's own forward along 4 random directions."""
    x64, targets = make((6, 5), 100, ignored=1)
    kwargs = {"reduction": "none", "label_smoothing": 0.1}
    grads = []
    for k in range(3):   # check_gradient draws grad_output v from the seed, as here
        grad = check_gradient(student, x64, targets, torch.float64, device, grad_seed=110 + k, **kwargs)
        v = torch.randn(targets.shape, generator=torch.Generator().manual_seed(110 + k), dtype=torch.float64)
        grads.append((v, grad.detach().cpu().double()))
    # Central differences of the student's forward along 4 random directions u, in one call:
    # the rows are independent, so x + h*u and x - h*u for every u are stacked as more rows.
    h, g = 1e-6, torch.Generator().manual_seed(120)
    directions = torch.randn((4, *x64.shape), generator=g, dtype=torch.float64)
    stacked = torch.cat([x64 + sign * h * u for u in directions for sign in (1, -1)])
    values = student.cross_entropy.cross_entropy(stacked.to(device), targets.repeat(8).to(device), **kwargs)
    if not isinstance(values, torch.Tensor) or values.numel() != 8 * targets.numel():
        raise CheckFailure("cross_entropy(logits (48, 5) float64, targets (48,), reduction='none') "
                           "must return 48 losses")
    values = values.detach().cpu().double().reshape(4, 2, -1)
    jvp = (values[:, 0] - values[:, 1]) / (2 * h)     # (4, N): J u for each direction u
    for k, (v, grad) in enumerate(grads):
        numeric, analytic = jvp @ v, (grad * directions).sum(dim=(1, 2))
        try:
            expect_close(analytic, numeric, atol=1e-6, rtol=1e-5, check_device=False,
                         what=f"the gradient of cross_entropy(...) dotted with 4 random directions "
                              f"(grad_output {k}) against central differences of its own values")
        except CheckFailure:
            # Error carried forward: a loss that is the contract's loss of the student's own wrong
            # log_softmax (e.g. the max subtracted, detached, and not added back: its backward is
            # not the derivative of its forward) inherits that mismatch; log_softmax's values test
            # charges the mistake.
            x = x64.to(device)
            loss = student.cross_entropy.cross_entropy(x, targets.to(device), **kwargs)
            if carried_forward(student, x, targets, loss, kwargs, 1e-10, 1e-8) == "":
                return
            raise


# ---- perplexity ---------------------------------------------------------------

PERPLEXITY_MISTAKES = lambda loss: {  # noqa: E731
    "perplexity uses 2 ** loss; with natural-log losses it is exp(loss) = e ** loss": 2.0 ** loss,
    "perplexity uses 10 ** loss; with natural-log losses it is exp(loss)": 10.0 ** loss,
    "perplexity is exp(-loss); it is exp(+loss)": math.exp(-loss),
    "perplexity returns the loss itself; it is exp(loss)": loss,
}


@pytest.mark.points(2)
def test_perplexity_values(student, device):
    """perplexity is exp(mean_loss) for numbers and one-element tensors (float32 and float64)"""
    for loss in (0.0, 1.5, math.log(27)):
        expect_scalar(student.cross_entropy.perplexity(loss), math.exp(loss), rtol=1e-6,
                      what=f"perplexity({loss:.6g})", mistakes=PERPLEXITY_MISTAKES(loss))
    for dtype in (torch.float32, torch.float64):
        loss = torch.tensor(2.25, dtype=dtype, device=device)
        expect_scalar(student.cross_entropy.perplexity(loss), math.exp(2.25), rtol=1e-6,
                      what=f"perplexity(torch.tensor(2.25, dtype={dtype}))", mistakes=PERPLEXITY_MISTAKES(2.25))


@pytest.mark.points(1)
def test_perplexity_of_own_loss(student, device):
    """perplexity(cross_entropy(logits, targets)) is exp of that loss, the 0-dim tensor as returned"""
    # Error carried forward: the expectation is exp of the student's OWN loss, read back; when
    # their cross_entropy gives no 0-dim tensor (charged by the loss tests), F.cross_entropy's is used.
    x, targets = make(SHAPES[1], 140, ignored=1)
    x, targets = x.float().to(device), targets.to(device)
    try:
        loss = student.cross_entropy.cross_entropy(x, targets)
    except StudentCodeError:
        loss = None
    if not isinstance(loss, torch.Tensor) or loss.shape != () or not torch.isfinite(loss):
        loss = like(oracle(x, targets), x)
    value = float(loss)
    expect_scalar(student.cross_entropy.perplexity(loss), math.exp(value), rtol=1e-6,
                  what=f"perplexity(cross_entropy(logits, targets)) with the loss {value:.6g} "
                       f"(a 0-dim {str(loss.dtype).removeprefix('torch.')} tensor on {device})",
                  mistakes=PERPLEXITY_MISTAKES(value))


def test_perplexity_is_float(student, device):
    """perplexity returns a Python float, also for a tensor argument"""
    for arg, text in ((1.5, "1.5"), (torch.tensor(1.5, device=device), "torch.tensor(1.5)")):
        value = student.cross_entropy.perplexity(arg)
        if not isinstance(value, float):
            raise CheckFailure(f"perplexity({text}) returned a {type(value).__name__}; return a Python "
                               f"float (math.exp(float(mean_loss)), or .item() of a tensor)")


# ---- banned APIs --------------------------------------------------------------

@pytest.mark.points(2)
def test_no_banned_apis(student, submission_dir, reference):
    """cross_entropy.py and its helper modules call none of the banned APIs"""
    x, targets = torch.zeros((2, 3)), torch.zeros(2, dtype=torch.int64)
    module = student.cross_entropy
    expect_own_code_without_banned_apis(
        [lambda: module.softmax(x), lambda: module.log_softmax(x), lambda: module.cross_entropy(x, targets),
         lambda: module.perplexity(1.0)],
        submission_dir, "cross_entropy", reference.BANNED_APIS,
        "softmax, log_softmax, cross_entropy and perplexity all")
