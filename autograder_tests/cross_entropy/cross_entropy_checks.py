"""Checks shared by the cross_entropy suite's test files (importable by name while grading).

Tolerances of reductions (`lse_atol`, `loss_atol`) come from grader.engine.checks.reduction_atol:
a float32 sum of n terms, accumulated in ANY order (a Python running sum, a loop over the
classes, .sum(), float64), is within γ_{n+4}·Σ|x_i| of the exact sum. They are combined
with the elementwise tolerance by max, so they only ever widen it.
"""

import math

import torch

from grader.testing import (CheckFailure, StudentCodeError, assert_outside, backward, expect_close,
                            reduction_atol, tensor_mismatch, tolerance)


def expect_close_large(got, expected: torch.Tensor, *, what: str, mistakes: dict, hint: str,
                       atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """expect_close, where a known mistake may produce inf or NaN: it is recognised by its
    pattern of NaNs and infinities (the values elsewhere must agree too, within the test's
    tolerance or 1e-3, whichever is looser: float32 code on logits of 1e4 drifts ~1e-3)."""
    try:
        expect_close(got, expected, what=what, atol=atol, rtol=rtol)
    except CheckFailure as failure:
        if not isinstance(got, torch.Tensor):
            raise
        g = got.detach().cpu().double()
        for description, produce in mistakes.items():
            try:
                b = produce().detach().cpu().double()
            except Exception:  # noqa: BLE001 -- a mistake that does not apply to these inputs
                continue
            if (g.shape == b.shape and torch.equal(torch.isnan(g), torch.isnan(b))
                    and torch.allclose(g[~torch.isnan(g)], b[~torch.isnan(b)], rtol=max(rtol, 1e-3),
                                       atol=max(atol, 1e-3))):
                raise CheckFailure(f"{what}: looks like {description}\n({failure})") from None
        if not torch.isfinite(g).all():
            raise CheckFailure(f"{failure}\n({hint})") from None
        raise


# ---- tolerances of reductions -------------------------------------------------

def u(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def lse_atol(x: torch.Tensor, dim: int = -1) -> float:
    """Absolute error bound of a log-sum-exp of `x` along `dim` in x's dtype, any order.

    S = Σ exp(x_j - max) has positive terms, so Σ|terms| = S and Ŝ is within γ_{C+4}·S of S
    (the exps' own rounding included): log Ŝ is within γ_{C+4} of log S. The final
    subtractions x - max - log S round to a few ulps of |x| + |x - max| + log S. For C = 5 in float32
    (logits N(0, 2)) this is ~5e-6, below the 1e-5 elementwise atol; for C = 50257 it is
    γ_50261 = 3.0e-3 plus ~1e-5.
    """
    x64 = x.detach().double().cpu()
    C = x.shape[dim]
    spread = (x64.abs().amax() + (x64 - x64.amax(dim, keepdim=True)).abs().amax()).item() + math.log(C)
    return reduction_atol(C, 1.0, dtype=x.dtype) + 4 * u(x.dtype) * spread


def loss_atol(x: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100, reduction: str = "mean",
              label_smoothing: float = 0.0) -> float:
    """atol for cross_entropy(x, targets, ...) in x's dtype: the elementwise atol, or the
    derived bound of its sums when larger.

    Per position: the log-sum-exp (`lse_atol`), plus for label smoothing eps·(a mean over C
    terms of -log p: γ_{C+4}·mean|log p| + the lse bound again). Then 'sum' adds N of those and
    γ_{N+4}·Σ|loss|; 'mean' one of them and γ_{N+4}·mean|loss| (N = counted positions).
    """
    x64 = x.detach().double().cpu()
    C, eps = x.shape[-1], float(label_smoothing)
    logp = x64 - torch.logsumexp(x64, -1, keepdim=True)
    keep = (targets.cpu() != ignore_index).reshape(-1)
    lse = lse_atol(x)
    smoothing = eps * (lse + reduction_atol(C, logp.abs().mean().item(), dtype=x.dtype)) if eps else 0.0
    per_term = lse + smoothing
    losses = -logp.reshape(-1, C).gather(-1, targets.cpu().reshape(-1, 1).clamp(0, C - 1)).squeeze(-1)
    losses = losses[keep].abs()
    n = int(keep.sum())
    if reduction == "none" or n == 0:
        derived = per_term
    elif reduction == "sum":
        derived = n * per_term + reduction_atol(n, losses.sum().item(), dtype=x.dtype)
    else:
        derived = per_term + reduction_atol(n, losses.mean().item(), dtype=x.dtype)
    return max(tolerance(x.dtype, x.device)[0], derived)



# ---- error carried forward: the student's own log_softmax ---------------------------

def own_log_softmax(student, x: torch.Tensor) -> torch.Tensor | None:
    """The student's log_softmax(x, -1) as data, or None when it does not give a usable tensor."""
    try:
        value = student.cross_entropy.log_softmax(x, -1)
    except StudentCodeError:
        return None
    if not isinstance(value, torch.Tensor) or value.shape != x.shape or not value.is_floating_point():
        return None
    return value.detach().double().cpu()


def loss_weights(targets: torch.Tensor, C: int, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """W (..., C) float64 with loss = Σ_(...) Σ_c W·(-log p) per position ('none') or summed:
    the loss is linear in the log-probabilities, whoever computed them."""
    targets = targets.cpu()
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    W = torch.full((*targets.shape, C), label_smoothing / C, dtype=torch.float64)
    W.scatter_add_(-1, safe.unsqueeze(-1), torch.full((*targets.shape, 1), 1.0 - label_smoothing,
                                                      dtype=torch.float64))
    W = W * keep.unsqueeze(-1)
    if reduction == "mean":
        W = W / keep.sum()
    return W


def loss_from(logp: torch.Tensor, targets: torch.Tensor, ignore_index=-100, reduction="mean",
              label_smoothing=0.0) -> torch.Tensor:
    """The loss of float64 log-probabilities `logp` (..., C), built as the contract says."""
    targets = targets.cpu()
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    per = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    if label_smoothing:
        per = (1 - label_smoothing) * per + label_smoothing * -logp.mean(-1)
    per = torch.where(keep, per, torch.zeros_like(per))
    if reduction == "none":
        return per
    return per.sum() / (keep.sum() if reduction == "mean" else 1)


LOG_SOFTMAX_TEST = "'log_softmax values for logits ...' (and its large-logit and gradient tests)"


def carried_forward(student, x: torch.Tensor, targets: torch.Tensor, got, options: dict,
                    atol: float, rtol: float) -> str | None:
    """Error carried forward from the student's log_softmax (see the module doc of the tests).

    Returns "" when `got` is exactly what the contract's loss is of the student's OWN
    log_softmax(x, -1) (that mistake is charged by the log_softmax tests, not here), a note
    naming that upstream mistake when the student's log_softmax is off but `got` is not
    explained by it, or None when the student's log_softmax is right (nothing carried)."""
    own = own_log_softmax(student, x)
    if own is None:
        return None
    exact = x.detach().double().cpu()
    exact = exact - torch.logsumexp(exact, -1, keepdim=True)
    if tensor_mismatch(own, exact, atol=lse_atol(x) + tolerance(x.dtype)[0], rtol=tolerance(x.dtype)[1],
                       check_dtype=False, equal_nan=False) is None:
        return None
    carried = loss_from(own, targets, **options)
    if isinstance(got, torch.Tensor) and tensor_mismatch(got.detach().cpu().double(), carried, atol=atol,
                                                         rtol=rtol, equal_nan=True) is None:
        return ""
    return (f"note: your log_softmax(logits, dim=-1) is also off on these logits; that is charged by "
            f"{LOG_SOFTMAX_TEST}, and this test would accept the loss of your own log-probabilities")


def carried_gradient(student, x: torch.Tensor, targets: torch.Tensor, grad_out: torch.Tensor, options: dict):
    """The gradient the contract's loss has through the student's OWN log_softmax: the
    vector-Jacobian product of their log_softmax with dL/dlog p = -W·grad_out (float64 CPU),
    or None when their log_softmax cannot be run backward."""
    W = loss_weights(targets, x.shape[-1], **options)
    g = grad_out.cpu().double()
    cotangent = -W * (g.unsqueeze(-1) if options.get("reduction") == "none" else g)
    leaf = x.detach().clone().requires_grad_()
    try:
        result = backward(student.cross_entropy.log_softmax, leaf, -1,
                          grad_output=cotangent.to(dtype=x.dtype, device=x.device))
    except StudentCodeError:
        return None
    grad = result.input_grads[0] if result.input_grads else None
    return None if grad is None else grad.detach().double().cpu()
