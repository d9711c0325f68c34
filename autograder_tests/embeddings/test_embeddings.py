"""Hidden tests of stage `embeddings` (see the contract and handout 04-embeddings.md).

Each known mistake is written next to the test that recognises it, as what the
buggy code would return for the same inputs. Expected values come from the
reference in float64. The out-of-range tests come last on purpose: on a GPU a
submission that indexes out of range without checking first trips a device-side
assert, which spoils the worker's CUDA context for every later call.
"""

import math

import pytest
import torch

from grader.checks import CheckFailure, expect_close, expect_equal, expect_raises
from grader.remote import StudentCodeError, backward

# The analogy table of the handout (section 6): dims are (royalty, maleness, fruitiness).
WORDS = ["man", "woman", "king", "queen", "prince", "apple"]
MAN, WOMAN, KING, QUEEN, PRINCE, APPLE = range(6)
ANALOGY_TABLE = [[1.0, 0.5, 0.0], [1.0, -0.5, 0.0], [4.0, 1.0, 0.0],
                 [4.0, -1.0, 1.0], [3.0, 2.0, 0.0], [0.0, 0.0, 2.0]]

# A table where cosine similarity and the dot product rank the rows differently (query [1, 0]).
# cosine: 2 (0.992), 4 (0.894), 1 (0.707), 0 (0), 3 (-1);  dot: 1 (3), 4 (1), 2 (0.8), 0, 3
NEAREST_TABLE = [[0.0, 1.0], [3.0, 3.0], [0.8, 0.1], [-1.0, 0.0], [1.0, -0.5]]
NEAREST_QUERY = [1.0, 0.0]


def randn(*shape, seed: int, device: str, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def int64(values, device: str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64, device=device)


def student_module(student, cls: str, rows: int, d_model: int, weight: torch.Tensor, device: str):
    """The student's `cls`(rows, d_model) holding `weight`, moved to `device`."""
    module = getattr(student.embeddings, cls)(rows, d_model)
    module.load_state_dict({"weight": weight})
    module.to(device)
    return module


def weight_grad(module, arg, grad_output: torch.Tensor, cls: str):
    """The gradient of `module`'s weight after backpropagating grad_output through module(arg)."""
    cut = (f"{cls}: no gradient reached weight: index the parameter itself "
           "(no .data, .detach() or torch.tensor(...) copies)")
    try:
        grads = backward(module, arg, grad_output=grad_output).param_grads
    except StudentCodeError as exc:
        if "does not require grad" in str(exc):
            raise CheckFailure(f"{cut}\n({str(exc).splitlines()[0]})") from None
        raise
    if grads.get("weight") is None:
        raise CheckFailure(cut)
    return grads["weight"]


def ranking(scores: torch.Tensor, k: int, exclude=(), descending: bool = True) -> torch.Tensor:
    """Indices of the k best scores (float64), after checking no near tie decides the order."""
    scores = scores.double().cpu().clone()
    scores[list(exclude)] = -math.inf if descending else math.inf
    order = scores.argsort(descending=descending)[: k + 1]
    kept = scores[order][torch.isfinite(scores[order])]
    assert kept.numel() < 2 or (kept[:-1] - kept[1:]).abs().min() > 1e-4, "grader: near tie in a ranking"
    return order[:k]


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
    weight = state["weight"]
    if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != shape or weight.dtype != torch.float32:
        got = f"{weight.dtype} {tuple(weight.shape)}" if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise CheckFailure(f"{cls}{shape}.weight: expected a torch.float32 tensor of shape {shape}, got {got}")


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
    if not isinstance(weight, torch.Tensor):
        raise CheckFailure(f"{cls}(1024, 256).weight should be a tensor, got {type(weight).__name__}")
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
    module = getattr(student.embeddings, "TokenEmbedding")(10, 4)
    module.double()
    module.load_state_dict({"weight": weight})
    module.to(device)
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
    expect_close(grad, expected, what="the gradient of PositionalEmbedding(8, 3).weight after forward(5)")


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


# ---- cosine_similarity ------------------------------------------------------------

COSINE_CASES = {"(4, 8) vs (8,)": ((4, 8), (8,)), "(2, 1, 8) vs (1, 3, 8)": ((2, 1, 8), (1, 3, 8)),
                "(6, 6) vs (6, 6)": ((6, 6), (6, 6)), "(3,) vs (3,)": ((3,), (3,))}


def cosine_mistakes(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> dict:
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum(-1) / (a64.norm(dim=-1) * b64.norm(dim=-1))
    return {
        "the similarity is taken over dim 0; it must be over the LAST dim":
            lambda: ((a64 * b64).sum(0) / (a64.norm(dim=0) * b64.norm(dim=0))).to(dtype),
        "the vectors are not normalised (that is the dot product)": lambda: (a64 * b64).sum(-1).to(dtype),
        "the result is 1 - cosine (the cosine distance)": lambda: (1 - cos).to(dtype),
        "the norms are squared (divide by ||a|| * ||b||, not ||a||^2 * ||b||^2)":
            lambda: ((a64 * b64).sum(-1) / (a64.norm(dim=-1) ** 2 * b64.norm(dim=-1) ** 2)).to(dtype),
    }


@pytest.mark.parametrize("case", list(COSINE_CASES))
def test_cosine(student, reference, device, case):
    """cosine_similarity over the last dim with broadcasting, {case}"""
    shape_a, shape_b = COSINE_CASES[case]
    a, b = randn(*shape_a, seed=8, device=device), randn(*shape_b, seed=9, device=device)
    expected = reference.cosine_similarity(a.double(), b.double()).float()
    # Norms are far above eps: every reading of eps (clamped norms, clamped product, added) agrees.
    eps = {"(3,) vs (3,)": {"eps": 1e-6}}.get(case, {})
    expect_close(student.embeddings.cosine_similarity(a, b, **eps), expected,
                 what=f"cosine_similarity(a {tuple(a.shape)}, b {tuple(b.shape)}"
                      + (", eps=1e-6)" if eps else ")"),
                 mistakes=cosine_mistakes(a, b, torch.float32))


def test_cosine_float64(student, reference, device):
    """cosine_similarity keeps float64"""
    # Norms about 10: eps = 1e-8 added to a norm product of ~100 stays below the float64 tolerance.
    a = 4 * randn(5, 7, seed=10, device=device, dtype=torch.float64)
    b = 4 * randn(7, seed=11, device=device, dtype=torch.float64)
    expect_close(student.embeddings.cosine_similarity(a, b), reference.cosine_similarity(a, b),
                 what="cosine_similarity(a (5, 7) float64, b (7,) float64)",
                 mistakes=cosine_mistakes(a, b, torch.float64))


def test_cosine_zero_vector(student, device):
    """cosine_similarity of a zero vector is 0, not NaN"""
    a = torch.zeros(2, 4, device=device)
    b = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]], device=device)
    expect_close(student.embeddings.cosine_similarity(a, b), torch.zeros(2, device=device), atol=1e-6,
                 what="cosine_similarity(zero vectors, [[1, 2, 3, 4], zeros]) (clamp each norm to at "
                      "least eps, so that a zero vector gives 0 instead of 0 / 0)")


# ---- nearest and analogy -------------------------------------------------------------

def nearest_mistakes(query, table, k, exclude) -> dict:
    q, t = query.double().cpu(), table.double().cpu()
    cos = (t @ q) / (t.norm(dim=1) * q.norm())
    device = table.device
    return {
        "the rows are ranked by dot product; rank them by cosine similarity":
            lambda: ranking(t @ q, k, exclude).to(device),
        "the order is ascending (the worst match first); the best must come first":
            lambda: ranking(cos, k, exclude, descending=False).to(device),
        "exclude is ignored": lambda: ranking(cos, k).to(device),
    }


@pytest.mark.parametrize("k, exclude", [(1, ()), (3, ()), (5, ()), (2, (2,)), (3, (2, 4))])
def test_nearest_hand(student, device, k, exclude):
    """nearest on a table where cosine and dot product disagree, k={k}, exclude={exclude}"""
    table, query = torch.tensor(NEAREST_TABLE, device=device), torch.tensor(NEAREST_QUERY, device=device)
    expected = ranking(torch.tensor(NEAREST_TABLE, dtype=torch.float64) @ torch.tensor(NEAREST_QUERY).double()
                       / torch.tensor(NEAREST_TABLE).double().norm(dim=1), k, exclude).to(device)
    args = (query, table, k) + ((list(exclude),) if exclude else ())
    expect_equal(student.embeddings.nearest(*args), expected,
                 what=f"nearest([1, 0], table, k={k}" + (f", exclude={list(exclude)})" if exclude else ")"),
                 mistakes=nearest_mistakes(query, table, k, exclude))


@pytest.mark.parametrize("seed", [12, 13])
def test_nearest_random(student, reference, device, seed):
    """nearest on a random (64, 16) table returns the 5 best rows, best first (seed {seed})"""
    table, query = randn(64, 16, seed=seed, device=device), randn(16, seed=seed + 100, device=device)
    exclude = [3, 17, 40]
    cos = reference.cosine_similarity(query.double(), table.double())
    expected = ranking(cos, 5, exclude).to(device)
    expect_equal(student.embeddings.nearest(query, table, 5, exclude), expected,
                 what="nearest(query, table (64, 16), k=5, exclude=[3, 17, 40])",
                 mistakes=nearest_mistakes(query, table, 5, exclude))


@pytest.mark.points(2)
@pytest.mark.parametrize("k", [1, 2])
def test_analogy_hand(student, device, k):
    """analogy: man is to king as woman is to queen (k={k})"""
    table = torch.tensor(ANALOGY_TABLE, device=device)
    expected = {1: [QUEEN], 2: [QUEEN, PRINCE]}[k]
    got = student.embeddings.analogy(table, MAN, KING, WOMAN, k)
    expect_equal(got, int64(expected, device), what=f"analogy(table, man, king, woman, k={k}) "
                 f"(the words are {WORDS}; expected {[WORDS[i] for i in expected]})", mistakes={
                     "the inputs a, b, c are not excluded (king itself is nearest to king - man + woman)":
                         int64({1: [KING], 2: [KING, QUEEN]}[k], device),
                     "the vector is table[a] - table[b] + table[c]; it must be table[b] - table[a] + table[c]":
                         int64({1: [APPLE], 2: [APPLE, QUEEN]}[k], device),
                 })


@pytest.mark.points(2)
def test_analogy_random(student, reference, device):
    """analogy on a random (40, 8) table returns the 3 best rows, inputs left out"""
    table = randn(40, 8, seed=14, device=device)
    for a, b, c in [(0, 1, 2), (5, 30, 12), (39, 7, 21)]:
        target = table.double()[b] - table.double()[a] + table.double()[c]
        expected = ranking(reference.cosine_similarity(target, table.double()), 3, [a, b, c]).to(device)
        swapped = table.double()[a] - table.double()[b] + table.double()[c]
        expect_equal(student.embeddings.analogy(table, a, b, c, 3), expected,
                     what=f"analogy(table (40, 8), {a}, {b}, {c}, k=3)", mistakes={
                         "the inputs a, b, c are not excluded": lambda: ranking(
                             reference.cosine_similarity(target, table.double()), 3).to(device),
                         "the vector is table[a] - table[b] + table[c]; it must be table[b] - table[a] + table[c]":
                             lambda: ranking(reference.cosine_similarity(swapped, table.double()), 3,
                                             [a, b, c]).to(device)})


# ---- banned APIs ------------------------------------------------------------------

@pytest.mark.points(2)
def test_no_banned_apis(student, submission_dir, reference):
    """embeddings.py and its helper modules call none of the banned APIs"""
    from grader.banned import expect_no_banned_apis

    # An untouched skeleton calls nothing at all: the points need some working code, that is a
    # returned value; an exception of any type counts for nothing.
    implemented = False
    for call in (lambda: student.embeddings.one_hot(int64([1], "cpu"), 2),
                 lambda: student.embeddings.cosine_similarity(torch.ones(2), torch.ones(2)),
                 lambda: student.embeddings.sinusoidal_positions(2, 2)):
        try:
            call()
            implemented = True
            break
        except StudentCodeError as exc:   # not implemented, or failing: judged by the other tests
            if exc.is_a("BannedAPIError"):   # refused at run time (an alias the source check misses)
                raise CheckFailure(str(exc)) from None
    if not implemented:
        raise CheckFailure("nothing in embeddings.py runs yet (one_hot, cosine_similarity and "
                           "sinusoidal_positions all fail), so there is no code to check for banned APIs")
    expect_no_banned_apis(submission_dir, "embeddings", reference.BANNED_APIS)


# ---- out-of-range ids: keep these last (see the module docstring) ----------------------

@pytest.mark.parametrize("bad", ["10 (= vocab_size)", "-1", "1000"])
def test_token_out_of_range(student, device, bad):
    """TokenEmbedding(10, 4) raises IndexError for the id {bad}"""
    module = student_module(student, "TokenEmbedding", 10, 4, randn(10, 4, seed=15, device="cpu"), device)
    value = int(bad.split()[0])
    with expect_raises("IndexError", what=f"TokenEmbedding(10, 4)(ids holding {value})"):
        module(int64([[0, 3], [value, 2]], device))
