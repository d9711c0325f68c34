"""Hidden tests of stage `attention`: causal_mask, scaled_dot_product_attention, banned APIs, speed.

Expected values come from the reference in float64 in the grading process. Each
known mistake is a variant of `attend` below, run on the same inputs, so the
feedback can say "looks like the scores are not scaled by 1/sqrt(d)".
MultiHeadAttention is tested in test_mha.py.
"""

import math

import pytest
import torch

from grader.checks import CheckFailure, expect_close, expect_equal, expect_raises, tensor_mismatch
from grader.remote import StudentCodeError, backward
from grader.timing import run_time


def randn(*shape, seed: int, device: str, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(device=device, dtype=dtype)


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


def variants(q, k, v, mask=None, is_causal=False) -> dict:
    """What each known mistake would return: {description: (output, weights)} (float64, CPU)."""
    d, dv = q.shape[-1], v.shape[-1]
    found = {
        "the scores are not scaled by 1/sqrt(d)": dict(scale=1.0),
        "the scores are scaled by 1/d instead of 1/sqrt(d)": dict(scale=1 / d),
        "the softmax is taken over the wrong dimension (over the queries, dim=-2); "
        "each query's weights over the KEYS (the last dim) must sum to 1": dict(dim=-2),
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


def check_attention(result, q, k, v, mask=None, is_causal=False, *, what: str, atol=None, rtol=None):
    """Compare the student's (output, weights) with the reference, naming a known mistake."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise CheckFailure(f"{what}: must return a tuple (output, weights), got "
                           f"{type(result).__name__}" + (f" of {len(result)} items" if
                                                         isinstance(result, (tuple, list)) else ""))
    out, weights = result
    expected_out, expected_w = attend(q, k, v, mask, is_causal)
    cast = dict(dtype=q.dtype, device=q.device)
    known = variants(q, k, v, mask, is_causal)
    tol = dict(atol=atol, rtol=rtol)
    for name, got, want, index in (("weights", weights, expected_w, 1), ("output", out, expected_out, 0)):
        label = f"{what} {name}"
        if isinstance(got, torch.Tensor) and torch.isnan(got).any() and not torch.isnan(want).any():
            explain_nan(got, want.to(**cast), known, index, label, tol)
        expect_close(got, want.to(**cast), what=label, **tol,
                     mistakes={d: pair[index].to(**cast) for d, pair in known.items()})


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


# ---- causal_mask ----------------------------------------------------------------------

@pytest.mark.points(2)
@pytest.mark.parametrize("T", [1, 4, 7])
def test_causal_mask(student, device, T):
    """causal_mask({T}) is the (T, T) bool lower triangle, True where j <= i"""
    expected = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    expect_equal(student.attention.causal_mask(T, device=device), expected,
                 what=f"causal_mask({T}, device={device!r})", mistakes={
                     "the diagonal is masked too (off by one): query i may attend key i itself":
                         torch.ones(T, T, dtype=torch.bool, device=device).tril(-1),
                     "the mask is the wrong way round: True must be where j <= i (tril), not j >= i":
                         torch.ones(T, T, dtype=torch.bool, device=device).triu(),
                     "True and False are swapped: True means 'may attend' (j <= i)":
                         torch.ones(T, T, dtype=torch.bool, device=device).triu(1),
                 })


# ---- scaled_dot_product_attention: values -----------------------------------------------

SHAPES = {
    "unbatched (T, d)": ((5, 8), (5, 8), 8),
    "batched (B, T, d)": ((2, 6, 8), (2, 6, 8), 8),
    "multi-head (B, H, T, d)": ((2, 3, 5, 4), (2, 3, 5, 4), 4),
    "d=8 and dv=3": ((2, 5, 8), (2, 5, 8), 3),
}


@pytest.mark.points(2)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", list(SHAPES))
def test_sdpa_shapes(student, device, case, causal):
    """scaled_dot_product_attention on {case} inputs, is_causal={causal}"""
    shape_q, shape_k, dv = SHAPES[case]
    q, k, v = qkv(shape_q, shape_k, dv, seed=10, device=device)
    call = f"scaled_dot_product_attention(q {shape_q}, k, v (.., {dv}), is_causal={causal})"
    check_attention(student.attention.scaled_dot_product_attention(q, k, v, is_causal=causal),
                    q, k, v, is_causal=causal, what=call)


def test_sdpa_default_not_causal(student, device):
    """scaled_dot_product_attention without mask or is_causal attends every key"""
    q, k, v = qkv((2, 4, 8), (2, 4, 8), 8, seed=11, device=device)
    check_attention(student.attention.scaled_dot_product_attention(q, k, v), q, k, v,
                    what="scaled_dot_product_attention(q, k, v) with no mask")


MASKS = {
    "a (Tq, Tk) mask with Tq=3 != Tk=6": ((2, 3, 8), (2, 6, 8), lambda g: torch.rand(3, 6, generator=g) > 0.4),
    "a (B, 1, 1, Tk) padding mask": ((2, 2, 5, 4), (2, 2, 5, 4),
                                     lambda g: torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]],
                                                            dtype=torch.bool).view(2, 1, 1, 5)),
    "a (B, Tq, Tk) mask": ((2, 4, 8), (2, 7, 8), lambda g: torch.rand(2, 4, 7, generator=g) > 0.5),
}


@pytest.mark.points(2)
@pytest.mark.parametrize("case", list(MASKS))
def test_sdpa_mask(student, device, case):
    """scaled_dot_product_attention with {case} (True = may attend)"""
    shape_q, shape_k, make = MASKS[case]
    q, k, v = qkv(shape_q, shape_k, 5, seed=12, device=device)
    mask = make(torch.Generator().manual_seed(5))
    mask[..., 0] = True  # every row keeps a key here; rows with none are tested below
    mask = mask.to(device)
    check_attention(student.attention.scaled_dot_product_attention(q, k, v, mask=mask), q, k, v, mask,
                    what=f"scaled_dot_product_attention with {case} {tuple(mask.shape)}")


@pytest.mark.points(2)
def test_sdpa_mask_and_causal(student, device):
    """scaled_dot_product_attention with a padding mask AND is_causal: a key must be allowed by both"""
    q, k, v = qkv((2, 2, 5, 4), (2, 2, 5, 4), 4, seed=13, device=device)
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 0, 1]], dtype=torch.bool).view(2, 1, 1, 5)
    mask = mask.to(device)
    check_attention(student.attention.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=True),
                    q, k, v, mask, True, what="scaled_dot_product_attention(q, k, v, padding mask, is_causal=True)")


@pytest.mark.points(2)
def test_sdpa_all_masked_rows(student, device):
    """a query with no allowed key gets all-zero weights and a zero output (no NaN)"""
    q, k, v = qkv((2, 4, 6), (2, 5, 6), 3, seed=14, device=device)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)
    mask = mask.to(device)
    check_attention(student.attention.scaled_dot_product_attention(q, k, v, mask=mask), q, k, v, mask,
                    what="scaled_dot_product_attention with a mask whose row 1 allows no key")


@pytest.mark.points(2)
def test_sdpa_exact_zeros_and_sums(student, device):
    """masked weights are exactly 0 and every row with an allowed key sums to 1"""
    # Scores of a few units: a mask filled with a modest negative number (say -20) leaves tiny weights.
    q, k, v = qkv((3, 6, 4), (3, 6, 4), 4, seed=15, device=device, scale=0.3)
    mask = (torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(6)) > 0.5) | torch.eye(6, dtype=torch.bool)
    mask = mask.to(device)
    out, weights = student.attention.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=True)
    allowed = mask & torch.ones(6, 6, dtype=torch.bool, device=device).tril()
    if not isinstance(weights, torch.Tensor) or weights.shape != allowed.shape:
        raise CheckFailure(f"the weights must be a tensor of shape {tuple(allowed.shape)}, got "
                           f"{getattr(weights, 'shape', type(weights).__name__)}")
    leaked = weights.detach().cpu().double().masked_fill(allowed.cpu(), 0.0).abs()
    if leaked.max() > 0:
        i = tuple(int(x) for x in (leaked == leaked.max()).nonzero()[0])
        raise CheckFailure(
            f"a masked weight is {leaked.max().item():.3g} at index {i}, not exactly 0. Fill the masked "
            "scores with -inf (exp(-inf) is exactly 0), not with a finite negative number, and do not "
            "add the mask after the softmax")
    sums = weights.detach().cpu().double().sum(-1)
    expect_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0, check_dtype=False,
                 what="the sum of each row of weights (over the keys, the last dim)")


@pytest.mark.points(2)
def test_sdpa_is_causal_is_causal(student, device):
    """with is_causal, changing future keys and values never changes earlier outputs"""
    q, k, v = qkv((2, 3, 8, 4), (2, 3, 8, 4), 4, seed=16, device=device)
    k2, v2 = k.clone(), v.clone()
    k2[..., 5:, :] += 3.0
    v2[..., 5:, :] -= 2.0
    first, _ = student.attention.scaled_dot_product_attention(q, k, v, is_causal=True)
    second, _ = student.attention.scaled_dot_product_attention(q, k2, v2, is_causal=True)
    changed = (first[..., :5, :] - second[..., :5, :]).abs().amax(dim=(0, 1, 3))
    if (changed > 0).any():
        t = int(changed.argmax())
        raise CheckFailure(f"the output at position {t} changed by {changed[t].item():.3g} when only keys and "
                           "values at positions 5..7 changed: a query sees the future. With is_causal, "
                           "query i may attend keys j <= i only")


@pytest.mark.points(2)
def test_sdpa_gradients(student, device):
    """gradients of q, k and v through scaled_dot_product_attention (masked and causal)"""
    q, k, v = qkv((2, 2, 5, 4), (2, 2, 5, 4), 3, seed=17, device=device)
    mask = torch.tensor([1, 1, 1, 1, 0], dtype=torch.bool, device=device)
    grad_out = randn(2, 2, 5, 3, seed=18, device=device)
    for t in (q, k, v):
        t.requires_grad_(True)
    got = backward(student.attention.scaled_dot_product_attention, q, k, v, mask=mask, is_causal=True,
                   grad_output=grad_out, output_index=0)
    leaves = [t.detach().cpu().double().requires_grad_(True) for t in (q, k, v)]
    expected_out, _ = attend(*leaves, mask.cpu(), True)
    expected_out.backward(grad_out.cpu().double())
    if len(got.input_grads) != 3:
        raise CheckFailure(f"expected gradients for q, k and v, got {len(got.input_grads)}")
    for name, grad, leaf in zip("qkv", got.input_grads, leaves):
        if grad is None:
            raise CheckFailure(f"no gradient reaches {name}: the output must be computed from it with torch "
                               "operations (no .detach(), .item() or .numpy() on the way)")
        expect_close(grad, leaf.grad.to(dtype=torch.float32, device=device),
                     what=f"the gradient of the output with respect to {name}")


def test_sdpa_is_causal_needs_square(student, device):
    """is_causal with Tq != Tk raises ValueError"""
    q, k, v = qkv((3, 4), (5, 4), 4, seed=19, device=device)
    with expect_raises("ValueError", what="scaled_dot_product_attention(q (3, 4), k (5, 4), v, is_causal=True)"):
        student.attention.scaled_dot_product_attention(q, k, v, is_causal=True)


def test_sdpa_float64(student, device):
    """float64 inputs give float64 results"""
    q, k, v = qkv((2, 5, 4), (2, 5, 4), 4, seed=20, device=device, dtype=torch.float64)
    check_attention(student.attention.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v,
                    is_causal=True, what="scaled_dot_product_attention(float64 q, k, v, is_causal=True)")


def test_sdpa_bfloat16(student, device):
    """bfloat16 inputs give bfloat16 results close to the float64 reference"""
    q, k, v = qkv((2, 2, 6, 8), (2, 2, 6, 8), 8, seed=21, device=device, dtype=torch.bfloat16, scale=1.0)
    # bf16 keeps 8 bits: scores of a few units round by ~1%, which moves weights by about as much.
    check_attention(student.attention.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v,
                    is_causal=True, what="scaled_dot_product_attention(bfloat16 q, k, v, is_causal=True)",
                    atol=3e-2, rtol=3e-2)


# ---- efficiency -------------------------------------------------------------------------

# On a GPU the contract's size, timed on the wall clock. On a CPU, single-threaded CPU time
# (grader/timing.py: other load on the machine does not change it) on a smaller size, where the
# cost of Python loops shows through: there a loop over 128 tokens measured 40-60x the
# reference, correct styles (einsum, a loop over heads, float64 inside) 2-3x. On the full size
# a loop over tokens is only a few times slower than one batched matmul on a CPU.
SPEED_SHAPE = {"cuda": (8, 8, 256, 64), "cpu": (1, 2, 128, 16)}
MAX_RATIO = 20.0
MIN_ROUNDS, MAX_ROUNDS = 3, 12


@pytest.mark.points(2)
@pytest.mark.call_timeout(120)
def test_sdpa_speed(student, reference, device):
    """scaled_dot_product_attention is vectorised: within 20x of the reference's time"""
    shape = SPEED_SHAPE[device]
    q, k, v = qkv(shape, shape, shape[-1], seed=22, device=device)
    # Check the result first: a fast wrong answer earns nothing here.
    got = student.attention.scaled_dot_product_attention(q, k, v, is_causal=True)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailure("scaled_dot_product_attention must return (output, weights)")
    expected = reference.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    expect_close(got[0], expected[0].float(), what=f"the output on {shape} inputs")
    # Timings on a busy machine only ever come out too long: take the best of several rounds,
    # the two timed in turns, and stop as soon as the best times are within the limit.
    theirs, ours = [], []
    for round_ in range(MAX_ROUNDS):
        theirs.append(run_time(student.attention.scaled_dot_product_attention, q, k, v, is_causal=True,
                               device=device, repeat=5, warmup=1))
        ours.append(run_time(reference.scaled_dot_product_attention, q, k, v, is_causal=True,
                             device=device, repeat=5, warmup=1))
        ratio = min(theirs) / max(min(ours), 1e-9)
        if round_ + 1 >= MIN_ROUNDS and ratio <= MAX_RATIO:
            return
    raise CheckFailure(
        f"scaled_dot_product_attention on {shape} took {min(theirs) * 1e3:.1f} ms, {ratio:.0f}x the "
        f"reference's {min(ours) * 1e3:.2f} ms (the limit is {MAX_RATIO:.0f}x). It is not vectorised: "
        "compute every score at once with one batched matmul, q @ k.transpose(-2, -1), over all "
        "batches, heads and positions, then the softmax over the last dim and weights @ v, "
        "instead of Python loops over tokens (or over the entries of the mask)")


# ---- banned APIs ------------------------------------------------------------------------

@pytest.mark.points(2)
def test_no_banned_apis(student, submission_dir, reference):
    """attention.py and its helper modules call none of the banned APIs"""
    from grader.banned import expect_no_banned_apis

    # An untouched skeleton calls nothing at all: the points need a working function first.
    q, k, v = qkv((3, 4), (3, 4), 4, seed=23, device="cpu")
    try:
        got = student.attention.scaled_dot_product_attention(q, k, v)
    except StudentCodeError as exc:
        if exc.is_a("BannedAPIError"):  # caught at run time: the source check says where
            expect_no_banned_apis(submission_dir, "attention", reference.BANNED_APIS)
            raise CheckFailure(str(exc)) from None
        got = None
    expected = attend(q, k, v)[0].float()
    if not isinstance(got, (tuple, list)) or not isinstance(got[0], torch.Tensor) \
            or tensor_mismatch(got[0], expected) is not None:
        raise CheckFailure("scaled_dot_product_attention does not work yet, so there is no code to check "
                           "for banned APIs")
    expect_no_banned_apis(submission_dir, "attention", reference.BANNED_APIS)
