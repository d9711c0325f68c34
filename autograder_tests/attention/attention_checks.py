"""Shared pieces of the `attention` hidden tests (not a test file): the float64 attention that
expected values come from, its known mistakes, and the check that names them.
"""

import contextlib
import math

import torch

from grader.testing import (CheckFailure, StudentCodeError, backward, expect_close, expect_sequence, randn,
                            reduction_atol, tensor_mismatch, tolerance)


def qkv(shape_q, shape_k, dv, seed, device, dtype=torch.float32, scale=1.5):
    """q (shape_q), k (shape_k), v (shape_k[:-1] + (dv,)); scale 1.5 makes the softmax peaked enough
    that a wrong scale or dimension shows clearly."""
    q = randn(*shape_q, seed=seed, device=device, dtype=dtype, scale=scale)
    k = randn(*shape_k, seed=seed + 1, device=device, dtype=dtype, scale=scale)
    v = randn(*shape_k[:-1], dv, seed=seed + 2, device=device, dtype=dtype)
    return q, k, v


# ---- attention and its known mistakes, in float64 on the CPU -----------------------------

def attend(q, k, v, mask=None, is_causal=False, *, scale=None, dim=-1, diagonal=0, fill=None,
           invert=False):
    """(output, weights) in float64 on the CPU; the keyword arguments make the known mistakes."""
    q, k, v = (t.cpu().double() for t in (q, k, v))
    d, Tq, Tk = q.shape[-1], q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-2, -1)) * (1 / math.sqrt(d) if scale is None else scale)
    allowed = torch.ones(Tq, Tk, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & (~mask.cpu() if invert else mask.cpu())
    if is_causal:
        allowed = allowed & torch.ones(Tq, Tk, dtype=torch.bool).tril(diagonal)
    allowed = allowed.expand_as(scores)
    scores = scores.masked_fill(~allowed, -math.inf if fill is None else fill)
    top = scores.amax(dim, keepdim=True)
    exps = (scores - torch.where(torch.isfinite(top), top, torch.zeros_like(top))).exp()
    totals = exps.sum(dim, keepdim=True)
    weights = exps / torch.where(totals > 0, totals, torch.ones_like(totals))
    return weights @ v, weights


WRONG_DIM = ("the softmax is taken over the wrong dimension (over the queries, dim=-2); "
             "each query's weights over the KEYS (the last dim) must sum to 1")


def variants(q, k, v, mask=None, is_causal=False) -> dict:
    """What each known mistake would return: {description: (output, weights)} (float64, CPU)."""
    d, dv = q.shape[-1], v.shape[-1]
    found = {
        "the scores are not scaled by 1/sqrt(d)": dict(scale=1.0),
        "the scores are scaled by 1/d instead of 1/sqrt(d)": dict(scale=1 / d),
        WRONG_DIM: dict(dim=-2),
    }
    if dv != d:
        found["the scores are scaled by 1/sqrt(dv), the VALUE dimension; d is the query/key dimension"] = \
            dict(scale=1 / math.sqrt(dv))
    if is_causal:
        found["the causal mask is off by one: it also masks the diagonal (query i must see keys j <= i, "
              "itself included: tril, not triu(diagonal=0))"] = dict(is_causal=True, diagonal=-1)
        found["the causal mask is the wrong way round (query i must see keys j <= i, the past, "
              "not j >= i)"] = "transposed"
        if mask is not None:
            found["is_causal is ignored when a mask is given (both must allow a key)"] = dict(is_causal=False)
            found["the mask is ignored when is_causal is set (both must allow a key)"] = dict(mask=None)
    if mask is not None:
        found["the mask is inverted: True means the query MAY attend that key"] = dict(invert=True)
        found["a row with no allowed key gets uniform weights: masked scores were filled with a large "
              "finite negative number instead of -inf; a row with no allowed key must give zero weights "
              "and a zero output"] = dict(fill=-1e9)
    out = {}
    for description, change in found.items():
        if change == "transposed":
            T = q.shape[-2]
            full = torch.ones(T, T, dtype=torch.bool).triu()
            both = full if mask is None else full & mask.cpu()
            out[description] = attend(q, k, v, both)
        else:
            args = dict(mask=mask, is_causal=is_causal) | change
            out[description] = attend(q, k, v, args.pop("mask"), args.pop("is_causal"), **args)
    return out


def output_and_weights(result, what: str):
    """(output, weights) from scaled_dot_product_attention, after checking it returned a pair."""
    return expect_sequence(result, ("output", "weights"), what=what)


def check_attention(result, q, k, v, mask=None, is_causal=False, *, what: str, atol=None, rtol=None):
    """Compare the student's (output, weights) with the reference, naming a known mistake."""
    out, weights = output_and_weights(result, what)
    expected_out, expected_w = attend(q, k, v, mask, is_causal)
    cast = dict(dtype=q.dtype, device=q.device)
    known = variants(q, k, v, mask, is_causal)
    for name, got, want, index in (("weights", weights, expected_w, 1), ("output", out, expected_out, 0)):
        label = f"{what} {name}"
        tol = dict(atol=atol if atol is not None else sum_atol(v, k.shape[-2], index), rtol=rtol)
        if isinstance(got, torch.Tensor) and torch.isnan(got).any() and not torch.isnan(want).any():
            explain_nan(got, want.to(**cast), known, index, label, tol)
        expect_close(got, want.to(**cast), what=label, **tol,
                     mistakes={d: pair[index].to(**cast) for d, pair in known.items()})


def sum_atol(v: torch.Tensor, n_keys: int, index: int) -> float:
    """atol for attention's sums over the keys, accumulated in v's dtype in any order (a loop of
    running sums included): the denominators (weights, index 1: terms summing to 1) and the
    weighted sums of the values (output, index 0: Σ|w_j v_j| <= max|v|), by
    grader.engine.checks.reduction_atol, or the elementwise tolerance when larger.

    The numbers: float32, Tk <= 8 keys here gives at most 12 * 6e-8 * 4 = 3e-6, under the
    elementwise 1e-5, and 128 keys (the speed test) 3e-5; the nearest named mistake (the scale
    1/sqrt(dv) for 1/sqrt(d), or a mask off by one) moves weights and outputs by more than 1e-2."""
    base = tolerance(v.dtype, v.device)[0]
    total = 1.0 if index == 1 else max(float(v.detach().abs().max()), 1.0) if v.numel() else 1.0
    return max(base, reduction_atol(n_keys, total, dtype=v.dtype))


def explain_nan(got, want, known, index, label, tol):
    """NaN where a number is expected: usually a row with no allowed key (softmax of only -inf)."""
    zeroed = torch.nan_to_num(got.detach(), nan=0.0)
    if tensor_mismatch(zeroed, want, **tol) is None:
        raise CheckFailure(f"{label}: NaN in a row with no allowed key. The softmax of a row of only -inf "
                           "scores is 0/0; such a row must have all-zero weights and a zero output")
    for description, pair in known.items():
        if tensor_mismatch(zeroed, pair[index].to(dtype=want.dtype, device=want.device), **tol) is None:
            raise CheckFailure(f"{label}: looks like {description}\n(and a row with no allowed key gives "
                               "NaN: it must have all-zero weights and a zero output)")


# ---- MultiHeadAttention over the student's own scaled_dot_product_attention -----------------

SDPA_TEST = "scaled_dot_product_attention on multi-head (B, H, T, d) inputs, is_causal={causal}"


def sdpa_note(student, device, causal: bool) -> str | None:
    """What the student's scaled_dot_product_attention gets wrong on multi-head inputs (the check of
    test_sdpa_shapes, whose name is given), or None when it is right."""

    q, k, v = qkv((2, 3, 5, 4), (2, 3, 5, 4), 4, seed=10, device=device)
    try:
        check_attention(student.attention.scaled_dot_product_attention(q, k, v, is_causal=causal), q, k, v,
                        is_causal=causal, what="scaled_dot_product_attention")
    except (CheckFailure, StudentCodeError) as exc:
        return (f"your scaled_dot_product_attention differs from the contract's ({str(exc).splitlines()[0]}), "
                f"charged by '{SDPA_TEST.format(causal=causal)}'")
    return None


@contextlib.contextmanager
def sdpa_blamed(student, device, causal: bool):
    """Around calls of the student's MultiHeadAttention: when one raises and their own
    scaled_dot_product_attention fails its check (say it returns only the output, which their
    forward then unpacks), the feedback names that mistake and the test charging it."""

    try:
        yield
    except StudentCodeError as exc:
        note = None if exc.is_a("NotImplementedError") else sdpa_note(student, device, causal)
        if note is None:
            raise
        raise CheckFailure(f"{exc}\n(note: {note}; your MultiHeadAttention uses it, so fix that first)") from None


def _heads(t, H):
    B, T, C = t.shape
    return t.reshape(B, T, H, C // H).transpose(1, 2)


def mha_own_sdpa(student, sd, x, n_heads, causal, grad_output=None):
    """MultiHeadAttention(x) in x's dtype with the contract's linear layers computed here and the
    heads' attention done by the student's own scaled_dot_product_attention (in the worker).
    With grad_output: (output, grad of x, {parameter: grad}), chained through it."""

    x = x.detach()
    cast = dict(dtype=x.dtype, device=x.device)
    w_qkv, w_out = sd["qkv.weight"].to(**cast), sd["out.weight"].to(**cast)
    b_qkv = sd["qkv.bias"].to(**cast) if "qkv.bias" in sd else None
    b_out = sd["out.bias"].to(**cast) if "out.bias" in sd else None
    B, T, C = x.shape
    h = x @ w_qkv.T + (0 if b_qkv is None else b_qkv)
    q, k, v = (_heads(t, n_heads) for t in h.split(C, dim=-1))
    sdpa = student.attention.scaled_dot_product_attention
    if grad_output is None:
        y, _ = sdpa(q, k, v, is_causal=causal)
    else:
        leaves = [t.contiguous().requires_grad_(True) for t in (q, k, v)]
        dy = grad_output.to(**cast)
        dyh = _heads(dy @ w_out, n_heads)
        result = backward(sdpa, *leaves, is_causal=causal, grad_output=dyh, output_index=0)
        y = result.value[0]
    merged = y.transpose(1, 2).reshape(B, T, C)
    out = merged @ w_out.T + (0 if b_out is None else b_out)
    if grad_output is None:
        return out
    dh = torch.cat([g.transpose(1, 2).reshape(B, T, C) for g in result.input_grads], dim=-1)
    grads = {"qkv.weight": dh.reshape(-1, 3 * C).T @ x.reshape(-1, C),
             "out.weight": dy.reshape(-1, C).T @ merged.reshape(-1, C)}
    if b_qkv is not None:
        grads |= {"qkv.bias": dh.reshape(-1, 3 * C).sum(0), "out.bias": dy.reshape(-1, C).sum(0)}
    return out, dh @ w_qkv, grads


def expect_mha(got, expected, *, what, student, sd, x, n_heads, causal, device, mistakes=None, own=None):
    """`got` must match the reference's `expected`; when the student's scaled_dot_product_attention
    fails its own check, the same MultiHeadAttention built on it (`own()`, default the output of
    mha_own_sdpa) instead, so that mistake is charged once, by the sdpa tests."""
    if tensor_mismatch(got, expected) is None:
        return
    note = sdpa_note(student, device, causal)
    if note is not None:
        try:
            rebuilt = own() if own is not None else mha_own_sdpa(student, sd, x, n_heads, causal)
        except Exception:  # noqa: BLE001 -- no usable sdpa: judged against the reference below
            rebuilt = None
        if rebuilt is not None and tensor_mismatch(got, rebuilt) is None:
            return
        try:
            expect_close(got, expected, what=what, mistakes=mistakes)
        except CheckFailure as exc:
            raise CheckFailure(f"{exc}\n(and {note}: this test compared with a MultiHeadAttention built on "
                               "your own scaled_dot_product_attention too, which differs as well)") from None
    expect_close(got, expected, what=what, mistakes=mistakes)
