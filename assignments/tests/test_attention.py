"""Public tests of stage `attention`: run them with `llmgrade check attention`.

Every expected value below is the handout's worked example (05-attention.md,
sections 2 and 4: three positions, d = 2), small enough to check by hand. The
hidden tests check much more (batches, heads, padding masks, rows with no
allowed key, gradients, MultiHeadAttention against the reference's weights).
"""

import pytest
import torch

from grader.testing import expect_close, expect_equal, expect_raises, expect_sequence, expect_tensor

pytestmark = pytest.mark.stage("attention")

Q = K = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
V = [[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]]

# Handout section 4: the causal example.
CAUSAL_WEIGHTS = [[1.0, 0.0, 0.0], [0.330238, 0.669762, 0.0], [0.248255, 0.248255, 0.503490]]
CAUSAL_OUTPUT = [[1.0, 0.0], [0.330238, 1.339523], [2.262214, 2.510470]]
# Handout section 2: no mask.
FULL_WEIGHTS = [[0.401112, 0.197776, 0.401112], [0.197776, 0.401112, 0.401112],
                [0.248255, 0.248255, 0.503490]]
FULL_OUTPUT = [[2.005560, 2.000000], [1.802224, 2.406673], [2.262214, 2.510470]]

# What common mistakes give on the causal example (handout "Common mistakes").
CAUSAL_MISTAKES = {
    "the scores are not scaled by 1/sqrt(d)":
        [[1.0, 0.0, 0.0], [0.268941, 0.731059, 0.0], [0.211942, 0.211942, 0.576117]],
    "the scores are scaled by 1/d instead of 1/sqrt(d)":
        [[1.0, 0.0, 0.0], [0.377541, 0.622459, 0.0], [0.274069, 0.274069, 0.451863]],
    "the causal mask is off by one: the diagonal is masked too (row 0 has no key left)":
        [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]],
    "the causal mask is the wrong way round (query i sees keys j >= i)":
        [[0.401112, 0.197776, 0.401112], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]],
}


def tensors(device):
    return (torch.tensor(Q, device=device), torch.tensor(K, device=device), torch.tensor(V, device=device))


def as_pair(result, what):
    return expect_sequence(result, ("output", "weights"), what=what)


def test_causal_mask(student):
    """causal_mask(4) is the lower triangle of the handout, bool"""
    expected = torch.ones(4, 4, dtype=torch.bool).tril()
    expect_equal(student.attention.causal_mask(4), expected, what="causal_mask(4)", mistakes={
        "the diagonal is masked too (off by one)": torch.ones(4, 4, dtype=torch.bool).tril(-1),
        "the mask is the wrong way round: True where j <= i": torch.ones(4, 4, dtype=torch.bool).triu(),
    })


@pytest.mark.points(2)
def test_worked_example_causal(student, device):
    """the handout's worked example with is_causal=True (weights and output)"""
    q, k, v = tensors(device)
    out, weights = as_pair(student.attention.scaled_dot_product_attention(q, k, v, is_causal=True),
                           "scaled_dot_product_attention")
    mistakes = {d: torch.tensor(w, device=device) for d, w in CAUSAL_MISTAKES.items()}
    expect_close(weights, torch.tensor(CAUSAL_WEIGHTS, device=device), atol=1e-5,
                 what="the weights of the causal worked example", mistakes=mistakes)
    expect_close(out, torch.tensor(CAUSAL_OUTPUT, device=device), atol=1e-5,
                 what="the output of the causal worked example")


def test_worked_example_no_mask(student, device):
    """the handout's worked example without a mask"""
    q, k, v = tensors(device)
    out, weights = as_pair(student.attention.scaled_dot_product_attention(q, k, v),
                           "scaled_dot_product_attention")
    expect_close(weights, torch.tensor(FULL_WEIGHTS, device=device), atol=1e-5,
                 what="the weights of the worked example without a mask")
    expect_close(out, torch.tensor(FULL_OUTPUT, device=device), atol=1e-5,
                 what="the output of the worked example without a mask")


def test_row_with_no_allowed_key(student, device):
    """a query whose mask row is all False gets zero weights and a zero output"""
    q, k, v = tensors(device)
    mask = torch.tensor([[True, False, False], [False, False, False], [True, True, True]], device=device)
    out, weights = as_pair(student.attention.scaled_dot_product_attention(q, k, v, mask=mask),
                           "scaled_dot_product_attention")
    expect_close(weights[1], torch.zeros(3, device=device), what="the weights of row 1 (no allowed key)")
    expect_close(out[1], torch.zeros(2, device=device), what="the output of row 1 (no allowed key)")
    expect_close(weights[0], torch.tensor([1.0, 0.0, 0.0], device=device), what="the weights of row 0")


def test_is_causal_needs_square(student):
    """is_causal with 3 queries and 2 keys raises ValueError"""
    q, k, v = tensors("cpu")
    with expect_raises("ValueError", what="scaled_dot_product_attention(q (3, 2), k (2, 2), v, is_causal=True)"):
        student.attention.scaled_dot_product_attention(q, k[:2], v[:2], is_causal=True)


@pytest.mark.points(2)
def test_mha_shapes_and_keys(student, device):
    """MultiHeadAttention(8, 2): state-dict keys, (B, T, d_model) output, ValueError for 8 % 3"""
    module = student.attention.MultiHeadAttention(8, 2)
    keys = sorted(dict(module.state_dict()))
    expect_equal(keys, ["out.bias", "out.weight", "qkv.bias", "qkv.weight"],
                 what="the state-dict keys of MultiHeadAttention(8, 2)")
    module.to(device)
    y = module(torch.zeros(2, 5, 8, device=device))
    expect_tensor(y, what="MultiHeadAttention(8, 2)(x (2, 5, 8))", shape=(2, 5, 8))
    with expect_raises("ValueError", what="MultiHeadAttention(8, 3)"):
        student.attention.MultiHeadAttention(8, 3)
