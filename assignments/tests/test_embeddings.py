"""Public tests of stage `embeddings`: run them with `llmgrade check embeddings`.

Every expected value below is a worked example of the handout (04-embeddings.md),
small enough to check by hand. The hidden tests check much more (gradients with
random inputs, weight initialisation, broadcasting, float64, every error case).
"""

import math

import pytest
import torch

from grader.testing import CheckFailure, backward, expect_close, expect_equal, expect_raises

pytestmark = pytest.mark.stage("embeddings")

# Handout sections 2 and 3: a 3 x 2 table, ids [2, 0, 2].
WEIGHT = [[0.5, -1.0],
          [2.0, 0.0],
          [-1.5, 3.0]]
IDS = [2, 0, 2]
ONE_HOT = [[0.0, 0.0, 1.0],
           [1.0, 0.0, 0.0],
           [0.0, 0.0, 1.0]]
LOOKUP = [[-1.5, 3.0],
          [0.5, -1.0],
          [-1.5, 3.0]]
GRAD_OUTPUT = [[1.0, 1.0],
               [2.0, 0.0],
               [0.0, 1.0]]
GRAD_WEIGHT = [[2.0, 0.0],     # row 0: position 1
               [0.0, 0.0],     # row 1: never looked up
               [1.0, 2.0]]     # row 2: positions 0 and 2 added up

# Handout section 5: d_model = 4, PE[p] = [sin(p), cos(p), sin(p / 100), cos(p / 100)].
SINUSOID = [[math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)] for p in range(4)]

# Handout section 6: (royalty, maleness, fruitiness).
WORDS = ["man", "woman", "king", "queen", "prince", "apple"]
TABLE = [[1.0, 0.5, 0.0], [1.0, -0.5, 0.0], [4.0, 1.0, 0.0], [4.0, -1.0, 1.0], [3.0, 2.0, 0.0], [0.0, 0.0, 2.0]]


def tensor(values, device, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype, device=device)


def hand_embedding(student, device):
    module = student.embeddings.TokenEmbedding(3, 2)
    module.load_state_dict({"weight": tensor(WEIGHT, "cpu")})
    module.to(device)
    return module


def test_one_hot_hand(student, device):
    """one_hot([2, 0, 2], 3) is float32 with one 1 per row"""
    expected = tensor(ONE_HOT, device)
    expect_close(student.embeddings.one_hot(tensor(IDS, device, torch.int64), 3), expected,
                 what="one_hot([2, 0, 2], 3)",
                 mistakes={"one_hot returns int64; it must be float32": expected.long(),
                           "one_hot returns bool; it must be float32": expected.bool()})


def test_lookup_hand(student, device):
    """TokenEmbedding with the handout's 3 x 2 table looks up rows 2, 0, 2"""
    module = hand_embedding(student, device)
    expect_close(module(tensor(IDS, device, torch.int64)), tensor(LOOKUP, device),
                 what="TokenEmbedding(3, 2) with the handout's weight, ids [2, 0, 2]")


def test_lookup_gradient_hand(student, device):
    """TokenEmbedding's weight gradient adds up repeated ids and leaves row 1 at 0"""
    module = hand_embedding(student, device)
    result = backward(module, tensor(IDS, device, torch.int64), grad_output=tensor(GRAD_OUTPUT, device))
    grad = result.param_grads.get("weight")
    if grad is None:
        raise CheckFailure("no gradient reached TokenEmbedding.weight: it must be an nn.Parameter "
                           "named weight, indexed directly (no .data or .detach())")
    expect_close(grad, tensor(GRAD_WEIGHT, device), what="the gradient of weight for ids [2, 0, 2]")


def test_lookup_rejects_bad_ids(student):
    """TokenEmbedding(3, 2) raises IndexError for the ids 3 and -1"""
    module = hand_embedding(student, "cpu")
    for bad in (3, -1):
        with expect_raises("IndexError", what=f"TokenEmbedding(3, 2)([0, {bad}])"):
            module(torch.tensor([0, bad]))


def test_positional_hand(student, device):
    """PositionalEmbedding(3, 2)(2) returns the rows of positions 0 and 1; 4 is a ValueError"""
    module = student.embeddings.PositionalEmbedding(3, 2)
    module.load_state_dict({"weight": tensor(WEIGHT, "cpu")})
    module.to(device)
    expect_close(module(2), tensor(WEIGHT[:2], device), what="PositionalEmbedding(3, 2)(2)")
    with expect_raises("ValueError", what="PositionalEmbedding(3, 2)(4)"):
        module(4)


def test_sinusoidal_hand(student):
    """sinusoidal_positions(4, 4) is the handout's table"""
    expect_close(student.embeddings.sinusoidal_positions(4, 4), tensor(SINUSOID, "cpu"), atol=1e-5, rtol=0.0,
                 what="sinusoidal_positions(4, 4)", mistakes={
                     "sin and cos are swapped": tensor([[r[1], r[0], r[3], r[2]] for r in SINUSOID], "cpu"),
                     "positions start at 1": tensor(SINUSOID[1:] + [[math.sin(4), math.cos(4), math.sin(0.04),
                                                                     math.cos(0.04)]], "cpu")})
    with expect_raises("ValueError", what="sinusoidal_positions(4, 5)"):
        student.embeddings.sinusoidal_positions(4, 5)


def test_cosine_hand(student, device):
    """cosine_similarity([1, 2, 2], [4, 0, 3]) is 10 / 15"""
    got = student.embeddings.cosine_similarity(tensor([1.0, 2.0, 2.0], device), tensor([4.0, 0.0, 3.0], device))
    expect_close(got, tensor(10 / 15, device), what="cosine_similarity([1, 2, 2], [4, 0, 3])",
                 mistakes={"the vectors are not normalised (that is the dot product 10)": tensor(10.0, device)})


def test_nearest_hand(student, device):
    """nearest([1, 0], ...) ranks by cosine similarity, not by dot product"""
    table = tensor([[3.0, 3.0], [0.8, 0.1]], device)
    expect_equal(student.embeddings.nearest(tensor([1.0, 0.0], device), table, 2),
                 tensor([1, 0], device, torch.int64), what="nearest([1, 0], [[3, 3], [0.8, 0.1]], k=2)",
                 mistakes={"the rows are ranked by dot product": tensor([0, 1], device, torch.int64)})


def test_analogy_hand(student, device):
    """analogy(table, man, king, woman) is queen, then prince"""
    table = tensor(TABLE, device)
    for k, expected in ((1, [3]), (2, [3, 4])):
        expect_equal(student.embeddings.analogy(table, 0, 2, 1, k), tensor(expected, device, torch.int64),
                     what=f"analogy(table, man=0, king=2, woman=1, k={k}) (expected "
                          f"{[WORDS[i] for i in expected]})",
                     mistakes={"the inputs are not excluded (king is nearest)":
                               tensor([2, 3][:k], device, torch.int64)})
