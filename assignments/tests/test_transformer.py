"""Public tests of stage `transformer`: run them with `llmgrade check transformer`.

Every expected value below comes from the handout (06-transformer.md) and can be
checked by hand. The hidden tests check much more: outputs and gradients of every
module with the same weights as the reference, weight tying, the loss, dropout,
float64 and the ValueError for long inputs.
"""

import math

import pytest
import torch

from grader.testing import (CheckFailure, expect_close, expect_equal, expect_sequence, expect_tensor,
                            expect_type)

pytestmark = pytest.mark.stage("transformer")

# Handout section 1: rows with mean 5 and variance 4, a spread far below sqrt(eps), and a constant.
HAND_ROWS = [[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0],
             [0.001, -0.001, 0.001, -0.001, 0.001, -0.001, 0.001, -0.001],
             [3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]]
S = 1 / math.sqrt(4 + 1e-5)     # 1 / sqrt(var + eps) of the first row
T = 0.001 / math.sqrt(1.1e-5)   # the second row's output, 0.3015
HAND_LN = [[-3 * S, -S, -S, -S, 0.0, 0.0, 2 * S, 4 * S],
           [T, -T, T, -T, T, -T, T, -T],
           [0.0] * 8]
U = 1 / math.sqrt(32 / 7 + 1e-5)            # the first row with the unbiased variance (32 / 7)
U2 = 0.001 / math.sqrt(8e-6 / 7 + 1e-5)     # the second row with the unbiased variance
E = 0.001 / (0.001 + 1e-5)                  # the second row with sqrt(var) + eps
LN_MISTAKES = {
    "the variance is unbiased (divided by d - 1); divide by d":
        [[-3 * U, -U, -U, -U, 0.0, 0.0, 2 * U, 4 * U], [U2, -U2, U2, -U2, U2, -U2, U2, -U2], [0.0] * 8],
    "eps is added outside the square root (use sqrt(var + eps))":
        [[-1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 1.0, 2.0], [E, -E, E, -E, E, -E, E, -E], [0.0] * 8],
}

# Handout section 2: the exact GELU, x * Phi(x).
GELU_X = [-2.5, -1.0, 0.0, 1.0, 2.0, 3.0, -3.0, 0.5]
GELU_Y = [x * 0.5 * (1 + math.erf(x / math.sqrt(2))) for x in GELU_X]
GELU_TANH = [0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))) for x in GELU_X]

# The state-dict keys of GPT(vocab_size=10, block_size=8, d_model=8, n_layers=1, n_heads=2) and their shapes.
TINY_KEYS = {
    "tok_emb.weight": (10, 8), "pos_emb.weight": (8, 8),
    "blocks.0.ln1.weight": (8,), "blocks.0.ln1.bias": (8,),
    "blocks.0.attn.qkv.weight": (24, 8), "blocks.0.attn.qkv.bias": (24,),
    "blocks.0.attn.out.weight": (8, 8), "blocks.0.attn.out.bias": (8,),
    "blocks.0.ln2.weight": (8,), "blocks.0.ln2.bias": (8,),
    "blocks.0.ffn.fc.weight": (32, 8), "blocks.0.ffn.fc.bias": (32,),
    "blocks.0.ffn.proj.weight": (8, 32), "blocks.0.ffn.proj.bias": (8,),
    "ln_f.weight": (8,), "ln_f.bias": (8,),
    "lm_head.weight": (10, 8),
}


def test_layernorm_hand(student, device):
    """LayerNorm(8) of the handout's three rows"""
    module = student.transformer.LayerNorm(8)
    module.to(device)
    x = torch.tensor(HAND_ROWS, device=device)
    expect_close(module(x), torch.tensor(HAND_LN, device=device), what="LayerNorm(8)(handout rows)",
                 mistakes={d: torch.tensor(v, device=device) for d, v in LN_MISTAKES.items()})


def test_layernorm_weight_bias(student, device):
    """LayerNorm(8) with weight 2 and bias 1 turns [2, 4, 4, 4, 5, 5, 7, 9] into about [-2, 0, 0, 0, 1, 1, 3, 5]"""
    module = student.transformer.LayerNorm(8)
    module.load_state_dict({"weight": torch.full((8,), 2.0), "bias": torch.ones(8)})
    module.to(device)
    x = torch.tensor(HAND_ROWS[:1], device=device)
    expected = torch.tensor([[2 * v + 1 for v in HAND_LN[0]]], device=device)
    expect_close(module(x), expected, what="LayerNorm(8) with weight 2, bias 1", mistakes={
        "the weight and bias are not applied": torch.tensor(HAND_LN[:1], device=device),
        "the bias is added before the weight: (x_hat + bias) * weight":
            torch.tensor([[2 * (v + 1) for v in HAND_LN[0]]], device=device)})


def test_feedforward_gelu(student, device):
    """FeedForward(8, 8) with identity fc and proj computes the exact GELU"""
    module = student.transformer.FeedForward(8, 8)
    module.load_state_dict({"fc.weight": torch.eye(8), "fc.bias": torch.zeros(8),
                            "proj.weight": torch.eye(8), "proj.bias": torch.zeros(8)})
    module.to(device)
    module.eval()
    x = torch.tensor([GELU_X], device=device)
    expect_close(module(x), torch.tensor([GELU_Y], device=device), what="FeedForward(8, 8)(x) = gelu(x)",
                 mistakes={"the tanh approximation of GELU is used; use the exact (erf) GELU":
                           torch.tensor([GELU_TANH], device=device),
                           "ReLU is used instead of GELU": torch.tensor([[max(v, 0.0) for v in GELU_X]],
                                                                         device=device)})


def test_gpt_state_dict_keys(student):
    """GPT(10, 8, 8, 1, 2) has exactly the contract's state-dict keys and shapes"""
    state = student.transformer.GPT(10, 8, 8, 1, 2).state_dict()
    expect_type(state, dict, what="GPT(10, 8, 8, 1, 2).state_dict()")
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    expect_equal(shapes, TINY_KEYS, what="GPT(10, 8, 8, 1, 2).state_dict() keys and shapes", mistakes={
        "lm_head has a bias: build it with nn.Linear(d_model, vocab_size, bias=False)":
            TINY_KEYS | {"lm_head.bias": (10,)}})


def test_gpt_logits_and_initial_loss(student, device):
    """GPT(10, 8, 8, 1, 2): logits (2, 8, 10), no loss without targets, initial loss near ln 10"""
    model = student.transformer.GPT(10, 8, 8, 1, 2)
    model.to(device)
    model.eval()
    idx = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 9, 9, 1, 1, 2, 2]], device=device)
    output = model(idx)
    logits, loss = expect_sequence(output, ("logits", "loss"), what="GPT(...)(idx)", types=(tuple,))
    expect_tensor(logits, what="GPT(...)(idx) logits", shape=(2, 8, 10))
    if loss is not None:
        raise CheckFailure("GPT(...)(idx): the loss must be None when no targets are given")
    _, loss = model(idx, idx.roll(-1, dims=1))
    value = float(loss) if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None
    if value is None or abs(value - math.log(10)) > 0.3:
        raise CheckFailure(f"GPT(...)(idx, targets) at initialisation: loss {value}, expected about "
                           f"ln 10 = {math.log(10):.3f} (tied weights of std 0.02 give near-uniform predictions)")
