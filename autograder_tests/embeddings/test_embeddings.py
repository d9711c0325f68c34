"""Hidden tests of stage `embeddings` (see the contract and handout 04-embeddings.md).

Each known mistake is written next to the test that recognises it, as what the
buggy code would return for the same inputs. Expected values come from the
reference in float64. cosine_similarity, nearest and analogy are in test_cosine.py.
Error carried forward: a positional gradient is also right when it lands on the rows
the student's own forward returned (a wrong choice of rows is charged once, by the
rows test). The out-of-range tests come last on purpose: on a GPU a
submission that indexes out of range without checking first trips a device-side
assert, which spoils the worker's CUDA context for every later call.
"""

import math

import pytest
import torch

from grader.testing import (CheckFailure, expect_close, expect_own_code_without_banned_apis, expect_raises,
                            expect_tensor, randn)

from embeddings_checks import int64, rows_used, student_module, weight_grad  # this folder's helpers

# ---- one_hot ------------------------------------------------------------------

ONE_HOT_CASES = {"(T,)": [3, 0, 2, 2, 1], "(B, T)": [[0, 4], [2, 1], [3, 3]], "a 0-dim tensor": 2,
                 "(1, 1)": [[1]]}


@pytest.mark.parametrize("case", list(ONE_HOT_CASES))
def test_one_hot(student, reference, device, case):
    """one_hot of ids shaped {case}: float32 (..., num_classes)"""
    ids = int64(ONE_HOT_CASES[case], device)
    expected = reference.one_hot(ids, 6)
    expect_close(student.embeddings.one_hot(ids, 6), expected,
                 what=f"one_hot(ids of shape {tuple(ids.shape)}, num_classes=6)", mistakes={
                     "one_hot returns int64; it must be float32 (convert with .float())": expected.long(),
                     "one_hot returns bool; it must be float32 (convert with .float())": expected.bool(),
                     "num_classes is ignored (the width must be num_classes, not ids.max() + 1)":
                         lambda: expected[..., : int(ids.max()) + 1],
                 })


# ---- TokenEmbedding -------------------------------------------------------------

def expect_weight(state: dict, cls: str, shape: tuple[int, int]) -> None:
    if not isinstance(state, dict) or "weight" not in state:
        keys = sorted(state) if isinstance(state, dict) else state
        raise CheckFailure(f"{cls}{shape}.state_dict() has no 'weight' (it has {keys}): store the table as "
                           "self.weight = nn.Parameter(...) so that it is learned and saved")
    expect_tensor(state["weight"], what=f"{cls}{shape}.weight", shape=shape, dtype=torch.float32)


@pytest.mark.parametrize("cls", ["TokenEmbedding", "PositionalEmbedding"])
def test_weight_is_parameter(student, cls):
    """{cls}.weight is a float32 parameter of shape (rows, d_model) named 'weight'"""
    module = getattr(student.embeddings, cls)(7, 5)
    expect_weight(module.state_dict(), cls, (7, 5))
    arg = 3 if cls == "PositionalEmbedding" else int64([1, 2, 6], "cpu")
    weight_grad(module, arg, torch.ones(3, 5), cls)   # fails unless weight is a parameter reached by autograd


@pytest.mark.parametrize("cls", ["TokenEmbedding", "PositionalEmbedding"])
def test_weight_init(student, cls):
    """{cls}.weight is drawn from N(0, 0.02)"""
    # 262144 draws: the sample std of N(0, 0.02) lies within 0.02 +- 0.001 (36 standard errors), the
    # mean within +-0.001 (25 s.e.), the share inside +-0.02 within 0.683 +- 0.02 (22 s.e.): a
    # correct init fails with probability below 1e-100, whatever the seed.
    weight = getattr(student.embeddings, cls)(1024, 256).weight
    expect_tensor(weight, what=f"{cls}(1024, 256).weight")
    w = weight.detach().double().cpu().flatten()
    mean, std, inside = w.mean().item(), w.std().item(), (w.abs() < 0.02).double().mean().item()
    what = f"{cls}(1024, 256).weight: mean {mean:.4g}, std {std:.4g}, share within 0.02 of 0 {inside:.3f}"
    if not math.isfinite(std) or abs(std - 0.02) > 0.001:
        for description, value in {"the weight is N(0, 1): scale torch.randn by 0.02": 1.0,
                                   "0.02 is used as the variance; it is the standard deviation":
                                       math.sqrt(0.02),
                                   "the weight is not initialised (zeros)": 0.0}.items():
            if abs(std - value) <= 0.05 * value + 1e-6:
                raise CheckFailure(f"{what}: looks like {description}")
        raise CheckFailure(f"{what}: expected std 0.02 (N(0, 0.02))")
    if abs(mean) > 0.001:
        raise CheckFailure(f"{what}: expected mean 0 (N(0, 0.02))")
    if abs(inside - 0.6827) > 0.02:
        raise CheckFailure(f"{what}: expected about 68.3% of the values within one std of 0: "
                           "draw from a normal distribution (torch.randn * 0.02), not a uniform one")


LOOKUP_CASES = {"(T,)": [4, 0, 9, 4, 2, 7], "(B, T)": [[1, 2, 3, 4, 5], [9, 9, 0, 1, 8], [3, 3, 3, 3, 3]],
                "(B, T, S)": [[[0, 1], [2, 3]], [[4, 5], [6, 7]]], "a 0-dim tensor": 5, "(1,)": [8],
                "(1, 1)": [[6]]}


@pytest.mark.parametrize("case", list(LOOKUP_CASES))
def test_token_lookup(student, reference, device, case):
    """TokenEmbedding(10, 4) of ids shaped {case} equals one_hot(ids) @ weight"""
    weight = randn(10, 4, seed=1, device="cpu")
    ids = int64(LOOKUP_CASES[case], device)
    module = student_module(student, "TokenEmbedding", 10, 4, weight, device)
    expected = (reference.one_hot(ids, 10).double() @ weight.double().to(device)).float()
    expect_close(module(ids), expected, what=f"TokenEmbedding(10, 4)(ids of shape {tuple(ids.shape)})")


def test_token_lookup_float64(student, reference, device):
    """TokenEmbedding after .double() returns float64 rows"""
    weight = randn(10, 4, seed=2, device="cpu", dtype=torch.float64)
    module = student_module(student, "TokenEmbedding", 10, 4, weight, device, double=True)
    ids = int64([[3, 1, 4], [1, 5, 9]], device)
    expect_close(module(ids), weight.to(device)[ids],
                 what="TokenEmbedding(10, 4).double()(ids) (the output has the weight's dtype)")


@pytest.mark.points(3)
def test_token_gradient(student, device):
    """TokenEmbedding's gradient reaches only the looked-up rows, repeated ids accumulating"""
    weight = randn(10, 4, seed=3, device="cpu")
    ids = int64([[1, 7, 1, 3], [7, 1, 0, 9]], device)   # 1 three times, 7 twice; 2, 4, 5, 6, 8 never
    grad_output = randn(2, 4, 4, seed=4, device=device)
    module = student_module(student, "TokenEmbedding", 10, 4, weight, device)
    grad = weight_grad(module, ids, grad_output, "TokenEmbedding")
    expected = torch.zeros(10, 4, dtype=torch.float64, device=device)
    expected.index_add_(0, ids.flatten(), grad_output.double().reshape(-1, 4))
    once = torch.zeros(10, 4, dtype=torch.float64, device=device)
    once[ids.flatten()] = grad_output.double().reshape(-1, 4)
    expect_close(grad, expected.float(), what="the gradient of TokenEmbedding(10, 4).weight", mistakes={
        "each repeated id receives the gradient of only one occurrence (gradients must add up)":
            once.float()})


# ---- PositionalEmbedding --------------------------------------------------------

@pytest.mark.parametrize("seq_len", [1, 5, 8])
def test_positional_rows(student, device, seq_len):
    """PositionalEmbedding(8, 3)({seq_len}) returns the first {seq_len} rows (positions 0, 1, ...)"""
    weight = randn(8, 3, seed=5, device="cpu")
    module = student_module(student, "PositionalEmbedding", 8, 3, weight, device)
    expected = weight[:seq_len].to(device)
    expect_close(module(seq_len), expected, what=f"PositionalEmbedding(8, 3)({seq_len})", mistakes={
        "the LAST seq_len rows are returned; positions start at row 0": weight[8 - seq_len:].to(device),
        "the rows start at position 1 instead of 0": lambda: weight[1: seq_len + 1].to(device)})


def test_positional_too_long(student):
    """PositionalEmbedding raises ValueError for seq_len > block_size"""
    module = student.embeddings.PositionalEmbedding(8, 3)
    with expect_raises("ValueError", what="PositionalEmbedding(8, 3)(9)"):
        module(9)


@pytest.mark.points(2)
def test_positional_gradient(student, device):
    """PositionalEmbedding's gradient reaches only the first seq_len rows"""
    weight = randn(8, 3, seed=6, device="cpu")
    grad_output = randn(5, 3, seed=7, device=device)
    module = student_module(student, "PositionalEmbedding", 8, 3, weight, device)
    grad = weight_grad(module, 5, grad_output, "PositionalEmbedding")
    expected = torch.zeros(8, 3, device=device)
    expected[:5] = grad_output
    what = "the gradient of PositionalEmbedding(8, 3).weight after forward(5)"
    try:
        expect_close(grad, expected, what=what)
    except CheckFailure:
        # Error carried forward: forward(5) returned other rows (charged by the rows test); the
        # gradient must still land exactly on the rows that forward returned.
        rows = rows_used(module(5), weight)
        if rows is None or rows == list(range(5)):
            raise
        carried = torch.zeros(8, 3, device=device)
        carried.index_add_(0, int64(rows, device), grad_output)
        expect_close(grad, carried, what=f"{what} (your forward(5) returns the rows {rows}, charged by "
                                         f"'PositionalEmbedding(8, 3)(5) returns the first 5 rows'; the "
                                         f"gradient must reach those rows)")


# ---- sinusoidal_positions -------------------------------------------------------

def sinusoid(seq_len: int, d: int, swap=False, exponent=lambda i2, d: i2 / d, start=0, halves=False,
             per_column=False) -> torch.Tensor:
    """The formula in float64, or one of its known mistakes."""
    p = torch.arange(start, start + seq_len, dtype=torch.float64)[:, None]
    i2 = torch.arange(0, d, 2, dtype=torch.float64)
    angle = p / 10000.0 ** exponent(i2, d)
    first, second = (angle.cos(), angle.sin()) if swap else (angle.sin(), angle.cos())
    if halves:
        return torch.cat([first, second], dim=1).float()
    pe = torch.stack([first, second], dim=-1).reshape(seq_len, d)
    if per_column:
        j = torch.arange(d, dtype=torch.float64)
        angles = p / 10000.0 ** (j / d)
        pe = torch.where(j % 2 == 0, angles.sin(), angles.cos())
    return pe.float()


SINUSOID_MISTAKES = {
    "sin and cos are swapped (even columns 2i take the sin, odd columns 2i+1 the cos)":
        dict(swap=True),
    "the exponent is i/d instead of 2i/d (i counts the pairs, 0..d/2-1)":
        dict(exponent=lambda i2, d: i2 / 2 / d),
    "the exponent is 4i/d: the 2 is applied twice (arange(0, d, 2) already gives 2i)":
        dict(exponent=lambda i2, d: 2 * i2 / d),
    "positions start at 1 instead of 0": dict(start=1),
    "sin and cos fill the two halves of the columns; they must interleave (sin at 2i, cos at 2i+1)":
        dict(halves=True),
    "column j uses 10000^(j/d); columns 2i and 2i+1 must share the frequency 10000^(2i/d)":
        dict(per_column=True),
}


@pytest.mark.parametrize("seq_len, d_model", [(4, 4), (3, 2), (16, 8), (50, 32), (256, 64)])
def test_sinusoidal(student, reference, seq_len, d_model):
    """sinusoidal_positions({seq_len}, {d_model}) matches the formula"""
    # float32 honestly drifts about 6e-8 x position (the angle is rounded): allow a few times that.
    atol = 2e-6 + 2e-7 * seq_len
    expected = reference.sinusoidal_positions(seq_len, d_model)
    expect_close(student.embeddings.sinusoidal_positions(seq_len, d_model), expected, atol=atol, rtol=0.0,
                 what=f"sinusoidal_positions({seq_len}, {d_model})",
                 mistakes={d: (lambda kw=kw: sinusoid(seq_len, d_model, **kw))
                           for d, kw in SINUSOID_MISTAKES.items()}
                 | {"the result is float64; it must be float32": lambda: expected.double()})


@pytest.mark.parametrize("d_model", [5, 1])
def test_sinusoidal_odd(student, d_model):
    """sinusoidal_positions raises ValueError for an odd d_model ({d_model})"""
    with expect_raises("ValueError", what=f"sinusoidal_positions(4, {d_model})"):
        student.embeddings.sinusoidal_positions(4, d_model)


# ---- banned APIs ------------------------------------------------------------------

@pytest.mark.points(2)
def test_no_banned_apis(student, submission_dir, reference):
    """embeddings.py and its helper modules call none of the banned APIs"""

    expect_own_code_without_banned_apis(
        [lambda: student.embeddings.one_hot(int64([1], "cpu"), 2),
         lambda: student.embeddings.cosine_similarity(torch.ones(2), torch.ones(2)),
         lambda: student.embeddings.sinusoidal_positions(2, 2)],
        submission_dir, "embeddings", reference.BANNED_APIS, "one_hot, cosine_similarity and sinusoidal_positions all")


# ---- out-of-range ids: keep these last (see the module docstring) ----------------------

@pytest.mark.parametrize("bad", ["10 (= vocab_size)", "-1", "1000"])
def test_token_out_of_range(student, device, bad):
    """TokenEmbedding(10, 4) raises IndexError for the id {bad}"""
    module = student.embeddings.TokenEmbedding(10, 4)   # its own table: only the range check matters
    module.to(device)
    value = int(bad.split()[0])
    with expect_raises("IndexError", what=f"TokenEmbedding(10, 4)(ids holding {value})"):
        module(int64([[0, 3], [value, 2]], device))
