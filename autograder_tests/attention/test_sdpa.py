"""Hidden tests of stage `attention`: causal_mask, scaled_dot_product_attention, banned APIs, speed.

Expected values come from the reference in float64 in the grading process. Each
known mistake is a variant of `attend` (attention_checks.py), run on the same inputs, so the
feedback can say "looks like the scores are not scaled by 1/sqrt(d)".
MultiHeadAttention is tested in test_mha.py.
"""

import pytest
import torch

from attention_checks import (WRONG_DIM, attend, check_attention, output_and_weights, qkv, sdpa_note,
                              sum_atol, variants)
from grader.testing import (CheckFailure, StudentCodeError, backward, expect_close, expect_equal,
                            expect_own_code_without_banned_apis, expect_raises, expect_sequence,
                            expect_tensor, randn, run_time, tensor_mismatch, tolerance)


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


def test_causal_mask_device_forms(student, device):
    """causal_mask(T) without a device is on the CPU; device= takes a string or a torch.device"""
    expected = torch.ones(5, 5, dtype=torch.bool).tril()
    expect_equal(student.attention.causal_mask(5), expected, what="causal_mask(5) (device omitted: None, the CPU)")
    expect_equal(student.attention.causal_mask(5, device=None), expected, what="causal_mask(5, device=None)")
    expect_equal(student.attention.causal_mask(5, torch.device(device)), expected.to(device),
                 what=f"causal_mask(5, torch.device({device!r}))")


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


def test_sdpa_explicit_defaults(student, device):
    """scaled_dot_product_attention(q, k, v, mask=None, is_causal=False) attends every key"""
    q, k, v = qkv((2, 4, 8), (2, 4, 8), 8, seed=24, device=device)
    check_attention(student.attention.scaled_dot_product_attention(q, k, v, mask=None, is_causal=False), q, k, v,
                    what="scaled_dot_product_attention(q, k, v, mask=None, is_causal=False)")


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
    # is_causal=False passed: the default is test_sdpa_default_not_causal's to charge.
    check_attention(student.attention.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=False),
                    q, k, v, mask, what=f"scaled_dot_product_attention with {case} {tuple(mask.shape)}")


@pytest.mark.points(2)
def test_sdpa_mask_and_causal(student, device):
    """scaled_dot_product_attention with a padding mask AND is_causal: a key must be allowed by both"""
    q, k, v = qkv((2, 2, 5, 4), (2, 2, 5, 4), 4, seed=13, device=device)
    # Every query keeps key 0 (no row is fully masked: that rule is test_sdpa_all_masked_rows's),
    # and each batch masks a key some queries could otherwise see, so "mask ignored" shows.
    mask = torch.tensor([[1, 0, 1, 1, 1], [1, 1, 1, 0, 1]], dtype=torch.bool).view(2, 1, 1, 5)
    mask = mask.to(device)
    check_attention(student.attention.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=True),
                    q, k, v, mask, True, what="scaled_dot_product_attention(q, k, v, padding mask, is_causal=True)")


@pytest.mark.points(2)
def test_sdpa_all_masked_rows(student, device):
    """a query with no allowed key gets all-zero weights and a zero output (no NaN)"""
    q, k, v = qkv((2, 4, 6), (2, 5, 6), 3, seed=14, device=device)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)
    mask = mask.to(device)
    check_attention(student.attention.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=False),
                    q, k, v, mask, what="scaled_dot_product_attention with a mask whose row 1 allows no key")


@pytest.mark.points(2)
def test_sdpa_exact_zeros_and_sums(student, device):
    """masked weights are exactly 0 and every row with an allowed key sums to 1"""
    # Scores of a few units: a mask filled with a modest negative number (say -20) leaves tiny weights.
    q, k, v = qkv((3, 6, 4), (3, 6, 4), 4, seed=15, device=device, scale=0.3)
    # A causal-looking mask passed as `mask` (is_causal itself is tested elsewhere), and the diagonal
    # always allowed: no row is fully masked (that rule is test_sdpa_all_masked_rows's).
    mask = (torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(6)) > 0.5) | torch.eye(6, dtype=torch.bool)
    allowed = (mask & torch.ones(6, 6, dtype=torch.bool).tril()).to(device)
    out, weights = output_and_weights(student.attention.scaled_dot_product_attention(q, k, v, mask=allowed,
                                                                                     is_causal=False),
                                      "scaled_dot_product_attention(q, k, v, mask)")
    expect_tensor(weights, what="scaled_dot_product_attention(q, k, v, mask): the weights", shape=allowed.shape)
    leaked = weights.detach().cpu().double().masked_fill(allowed.cpu(), 0.0).abs()
    if leaked.max() > 0:
        i = tuple(int(x) for x in (leaked == leaked.max()).nonzero()[0])
        leak = f"a masked weight is {leaked.max().item():.3g} at index {i}, not exactly 0"
        # A known mistake whose weights differ from the contract's (the mask inverted, say) is named;
        # tiny leaks (a finite fill) match none of them and get the advice below.
        expected_w = attend(q, k, v, allowed)[1]
        for description, (_, variant_w) in variants(q, k, v, allowed).items():
            if tensor_mismatch(variant_w, expected_w) is not None and \
                    tensor_mismatch(weights, variant_w.to(dtype=q.dtype, device=q.device)) is None:
                raise CheckFailure(f"{leak}: looks like {description}")
        raise CheckFailure(
            f"{leak}. Fill the masked scores with -inf (exp(-inf) is exactly 0), not with a finite negative "
            "number, and do not add the mask after the softmax")
    sums = weights.detach().cpu().double().sum(-1)
    # A sum of at most 6 weights: reduction_atol(6, 1) = 6e-7, under the 1e-5 used here.
    expect_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0, check_dtype=False,
                 what="the sum of each row of weights (over the keys, the last dim)",
                 mistakes={description: (lambda dim=dim: attend(q, k, v, allowed, dim=dim)[1].sum(-1))
                           for description, dim in [(WRONG_DIM, -2)]})


@pytest.mark.points(2)
def test_sdpa_is_causal_is_causal(student, device):
    """with is_causal, changing future keys and values never changes earlier outputs"""
    q, k, v = qkv((2, 3, 8, 4), (2, 3, 8, 4), 4, seed=16, device=device)
    k2, v2 = k.clone(), v.clone()
    k2[..., 5:, :] += 3.0
    v2[..., 5:, :] -= 2.0
    what = "scaled_dot_product_attention(q, k, v, is_causal=True)"
    first, _ = output_and_weights(student.attention.scaled_dot_product_attention(q, k, v, is_causal=True), what)
    second, _ = output_and_weights(student.attention.scaled_dot_product_attention(q, k2, v2, is_causal=True), what)
    changed = (first[..., :5, :] - second[..., :5, :]).abs().amax(dim=(0, 1, 3))
    # A change within the tolerance is masked weights that are tiny but not exactly 0 (a finite
    # fill such as -20 moves these outputs by ~5e-8): test_sdpa_exact_zeros_and_sums charges that.
    if (changed > tolerance(first.dtype, device)[0]).any():
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
    try:
        got = backward(student.attention.scaled_dot_product_attention, q, k, v, mask=mask, is_causal=True,
                       grad_output=grad_out, output_index=0)
    except StudentCodeError:
        # Often the result is not the contract's (output, weights) pair, so output 0 is not the output.
        output_and_weights(student.attention.scaled_dot_product_attention(q.detach(), k.detach(), v.detach(),
                                                                          mask=mask, is_causal=True),
                           "scaled_dot_product_attention(q, k, v, mask, is_causal=True)")
        raise
    leaves = [t.detach().cpu().double().requires_grad_(True) for t in (q, k, v)]
    expected_out, _ = attend(*leaves, mask.cpu(), True)
    expected_out.backward(grad_out.cpu().double())
    if len(got.input_grads) != 3:
        raise CheckFailure(f"expected gradients for q, k and v, got {len(got.input_grads)}")
    wanted, note = [leaf.grad for leaf in leaves], ""
    value = got.value[0] if isinstance(got.value, (tuple, list)) and got.value else None
    if tensor_mismatch(value, expected_out.detach().to(dtype=torch.float32, device=device)) is not None:
        wanted, note = variant_grads(value, q, k, v, mask, grad_out) or (wanted, note)
    for name, grad, want in zip("qkv", got.input_grads, wanted):
        if grad is None:
            raise CheckFailure(f"no gradient reaches {name}: the output must be computed from it with torch "
                               "operations (no .detach(), .item() or .numpy() on the way)")
        expect_close(grad, want.to(dtype=torch.float32, device=device),
                     what=f"the gradient of the output with respect to {name}{note}")


def variant_grads(value, q, k, v, mask, grad_out):
    """When the student's output is a known mistake's (charged by the value tests), that mistake's
    gradients of q, k and v and a note saying so; else None (error carried forward)."""
    leaves = [t.detach().cpu().double().requires_grad_(True) for t in (q, k, v)]
    for description, (out, _) in variants(*leaves, mask.cpu(), True).items():
        if tensor_mismatch(value, out.detach().to(dtype=torch.float32, device=q.device)) is None:
            grads = torch.autograd.grad(out, leaves, grad_out.cpu().double(), allow_unused=True)
            return ([torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves)],
                    f" (compared with the gradients of your forward, in which {description}: "
                    "that is charged by the value tests)")
    return None


def test_sdpa_is_causal_needs_square(student, device):
    """is_causal with Tq != Tk raises ValueError"""
    q, k, v = qkv((3, 4), (5, 4), 4, seed=19, device=device)
    with expect_raises("ValueError", what="scaled_dot_product_attention(q (3, 4), k (5, 4), v, is_causal=True)"):
        student.attention.scaled_dot_product_attention(q, k, v, is_causal=True)


def test_sdpa_float64(student, device):
    """float64 inputs give float64 results"""
    # No mask: float64's tight tolerance would otherwise charge masked weights that are tiny but not
    # exactly 0 again (test_sdpa_exact_zeros_and_sums owns that rule).
    q, k, v = qkv((2, 5, 4), (2, 5, 4), 4, seed=20, device=device, dtype=torch.float64)
    check_attention(student.attention.scaled_dot_product_attention(q, k, v, is_causal=False), q, k, v,
                    what="scaled_dot_product_attention(float64 q, k, v)")


def test_sdpa_bfloat16(student, device):
    """bfloat16 inputs give bfloat16 results close to the float64 reference"""
    q, k, v = qkv((2, 2, 6, 8), (2, 2, 6, 8), 8, seed=21, device=device, dtype=torch.bfloat16, scale=1.0)
    # bf16 keeps 8 bits: scores of a few units round by ~1%, which moves weights by about as much.
    check_attention(student.attention.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v,
                    is_causal=True, what="scaled_dot_product_attention(bfloat16 q, k, v, is_causal=True)",
                    atol=3e-2, rtol=3e-2)


# ---- efficiency -------------------------------------------------------------------------

# Timed on the CPU whatever the grading device: single-threaded CPU time (grader/engine/timing.py:
# other load on the machine does not change it), on a size where the cost of Python loops shows
# through. Measured at SPEED_SHAPE (best of 8, ratio to the reference's ~0.3 ms): vectorised
# styles 0.8-2.1x (compact, own softmax, einsum, float64 inside, broadcast-and-sum, a loop over
# the 2 heads); Python loops over positions 12x (running sums over the keys) to 30x (a loop over
# the queries). The limit, 5x, sits about 2.5x from each side; a submission gets up to 12 rounds
# to come under it, a loop must stay over it in all of them. On a GPU the wall clock cannot tell
# these apart: both are bound by kernel launches (the running sums took 16.5 ms at (8, 8, 256, 64)
# on an H200, 45x the reference). On CUDA the result is still checked there, at that size.
SPEED_SHAPE = (1, 2, 128, 16)
CHECK_SHAPE = {"cuda": (8, 8, 256, 64), "cpu": SPEED_SHAPE}
MAX_RATIO = 5.0
MIN_ROUNDS, MAX_ROUNDS = 3, 12


@pytest.mark.points(2)
@pytest.mark.call_timeout(120)
def test_sdpa_speed(student, reference, device):
    """scaled_dot_product_attention is vectorised: within 5x of the reference's CPU time"""
    # Check the result first: a fast wrong answer earns nothing here.
    shape = CHECK_SHAPE[device]
    q, k, v = qkv(shape, shape, shape[-1], seed=22, device=device)
    got = student.attention.scaled_dot_product_attention(q, k, v, is_causal=True)
    expect_sequence(got, ("output", "weights"), what="scaled_dot_product_attention(q, k, v, is_causal=True)")
    expected = reference.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    atol = sum_atol(v, shape[-2], 0)   # 128 (CPU) or 256 (CUDA) keys: ~3e-5 / 7e-5
    if tensor_mismatch(got[0], expected[0].float(), atol=atol) is not None and \
            sdpa_note(student, device, True) is None:
        # Wrong here though right on the value tests' small inputs: charged here. A mistake the
        # value tests already charge (sdpa_note) is not charged again: only the time counts then.
        expect_close(got[0], expected[0].float(), what=f"the output on {shape} inputs", atol=atol)
    # Timings on a busy machine only ever come out too long: take the best of several rounds,
    # the two timed in turns, and stop as soon as the best times are within the limit.
    q, k, v = qkv(SPEED_SHAPE, SPEED_SHAPE, SPEED_SHAPE[-1], seed=22, device="cpu")
    theirs, ours = [], []
    for round_ in range(MAX_ROUNDS):
        theirs.append(run_time(student.attention.scaled_dot_product_attention, q, k, v, is_causal=True,
                               device="cpu", repeat=5, warmup=1))
        ours.append(run_time(reference.scaled_dot_product_attention, q, k, v, is_causal=True,
                             device="cpu", repeat=5, warmup=1))
        ratio = min(theirs) / max(min(ours), 1e-9)
        if round_ + 1 >= MIN_ROUNDS and ratio <= MAX_RATIO:
            return
    raise CheckFailure(
        f"scaled_dot_product_attention on {SPEED_SHAPE} CPU inputs took {min(theirs) * 1e3:.1f} ms of CPU "
        f"time, {ratio:.0f}x the reference's {min(ours) * 1e3:.2f} ms (the limit is {MAX_RATIO:.0f}x). "
        "It is not vectorised: compute every score at once with one batched matmul, "
        "q @ k.transpose(-2, -1), over all batches, heads and positions, then the softmax over the "
        "last dim and weights @ v, instead of Python loops over tokens (or over the entries of the mask)")


# ---- banned APIs ------------------------------------------------------------------------

@pytest.mark.points(2)
def test_no_banned_apis(student, submission_dir, reference):
    """attention.py and its helper modules call none of the banned APIs"""

    q, k, v = qkv((3, 4), (3, 4), 4, seed=23, device="cpu")
    expect_own_code_without_banned_apis([lambda: student.attention.scaled_dot_product_attention(q, k, v)],
                                        submission_dir, "attention", reference.BANNED_APIS,
                                        "scaled_dot_product_attention")
