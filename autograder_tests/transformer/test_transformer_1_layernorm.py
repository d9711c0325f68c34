"""Hidden tests of stage `transformer`: LayerNorm (see the contract and handout 06-transformer.md).

Expected values come from the reference in float64; each known mistake is
written as what it would produce for the same inputs (transformer_checks.py).
"""

import pytest
import torch

from grader.testing import CheckFailure, backward, expect_close, expect_equal, randn
from transformer_checks import build_reference, layer_norm, student_like
from transformer_parts import ln_atol, ln_mistakes

# The handout's worked example (section 1): a row with mean 5 and variance 4, a row whose
# spread is far below sqrt(eps), and a constant row (variance 0: only eps avoids 0 / 0).
HAND_ROWS = [[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0],
             [0.001, -0.001, 0.001, -0.001, 0.001, -0.001, 0.001, -0.001],
             [3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]]


def student_ln(student, reference, device, d_model=16, seed=0, dtype=torch.float32, **kwargs):
    ref = build_reference(reference, "LayerNorm", d_model, seed=seed, **kwargs).to(dtype)
    what = f"LayerNorm({d_model}{''.join(f', {k}={v}' for k, v in kwargs.items())})"
    module = student_like(student, ref, "LayerNorm", d_model, device=device, what=what, dtype=dtype, **kwargs)
    return module, ref, what


@pytest.mark.points(2)
def test_layernorm_parameters(student, reference):
    """LayerNorm(8) has parameters weight (ones) and bias (zeros); bias=False has no bias"""
    ln = student.transformer.LayerNorm(8)
    state = ln.state_dict()
    expect_equal(sorted(state) if isinstance(state, dict) else state, ["bias", "weight"],
                 what="LayerNorm(8).state_dict() keys",
                 mistakes={"weight and bias are plain tensors; wrap them in nn.Parameter": []})
    expect_close(state["weight"], torch.ones(8), what="LayerNorm(8).weight at construction", mistakes={
        "the weight starts at zeros; it starts at ones (the norm begins as a plain standardisation)":
            torch.zeros(8)})
    expect_close(state["bias"], torch.zeros(8), what="LayerNorm(8).bias at construction")
    x, g = randn(2, 8, seed=1), randn(2, 8, seed=2)
    names = sorted(backward(ln, x, grad_output=g).param_grads)
    expect_equal(names, ["bias", "weight"], what="LayerNorm(8)'s trainable parameters (named_parameters)",
                 mistakes={"weight and bias are plain tensors; wrap them in nn.Parameter": []})
    no_bias = student.transformer.LayerNorm(8, bias=False)
    names = sorted(backward(no_bias, x, grad_output=g).param_grads)
    expect_equal(names, ["weight"], what="LayerNorm(8, bias=False)'s trainable parameters", mistakes={
        "bias=False still makes a bias parameter": ["bias", "weight"]})
    expect_close(no_bias(x), reference.LayerNorm(8, bias=False).double()(x.double()).float(),
                 what="LayerNorm(8, bias=False)(x) with its initial weight", mistakes=ln_mistakes(x, torch.ones(8)))


@pytest.mark.points(2)
def test_layernorm_hand(student, reference, device):
    """LayerNorm(8) of the handout's three rows (mean 5 var 4, tiny spread, constant)"""
    x = torch.tensor(HAND_ROWS, device=device)
    expected = reference.LayerNorm(8).double().to(device)(x.double()).float()
    module = student.transformer.LayerNorm(8)
    module.to(device)
    expect_close(module(x), expected, what="LayerNorm(8)(handout rows)",
                 mistakes=ln_mistakes(x, torch.ones(8, device=device), torch.zeros(8, device=device)))


SHAPES = {"(B, T, C)": (2, 5, 16), "(T, C)": (7, 16), "(C,)": (16,)}


@pytest.mark.points(2)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_layernorm_values(student, reference, device, shape):
    """LayerNorm(16) with learned weight and bias on inputs shaped {shape}"""
    module, ref, what = student_ln(student, reference, device)
    x = randn(*SHAPES[shape], seed=3, device=device, scale=2.0, shift=0.5)
    ref64 = ref.double().to(device)
    expect_close(module(x), ref64(x.double()).float(), what=f"{what}(x of shape {tuple(x.shape)})",
                 mistakes=ln_mistakes(x, ref64.weight, ref64.bias), atol=ln_atol(x, ref64.weight))


EPS_CASES = {"eps=0.5": (dict(eps=0.5), 1.0), "the default eps, spread 0.002": ({}, 0.002)}


@pytest.mark.points(2)
@pytest.mark.parametrize("case", list(EPS_CASES))
def test_layernorm_eps(student, reference, device, case):
    """LayerNorm uses eps inside the square root ({case})"""
    kwargs, spread = EPS_CASES[case]
    module, ref, what = student_ln(student, reference, device, seed=4, **kwargs)
    x = randn(3, 4, 16, seed=5, device=device, scale=spread)
    ref64 = ref.double().to(device)
    mistakes = ln_mistakes(x, ref64.weight, ref64.bias, ref64.eps)
    if kwargs:  # named first: with eps=0.5, "1e-5 instead" and "no eps at all" look alike
        mistakes = {"the eps argument is ignored (1e-5 is used)":
                    lambda: layer_norm(x, ref64.weight, ref64.bias, 1e-5)} | mistakes
    expect_close(module(x), ref64(x.double()).float(), what=f"{what}(x with spread {spread})",
                 mistakes=mistakes)


def test_layernorm_explicit_defaults(student, reference, device):
    """LayerNorm(16, eps=1e-5, bias=True), the defaults passed explicitly, has a bias and uses eps 1e-5"""
    module, ref, what = student_ln(student, reference, device, seed=13, eps=1e-5, bias=True)
    x = randn(3, 4, 16, seed=14, device=device, scale=0.002)
    ref64 = ref.double().to(device)
    expect_close(module(x), ref64(x.double()).float(), what=f"{what}(x with spread 0.002)",
                 mistakes=ln_mistakes(x, ref64.weight, ref64.bias, ref64.eps))


@pytest.mark.points(2)
def test_layernorm_large_mean(student, reference, device):
    """LayerNorm of float32 inputs whose mean (100) dwarfs their spread (1)"""
    module, ref, what = student_ln(student, reference, device, d_model=32, seed=6)
    x = randn(64, 32, seed=7, device=device, shift=100.0)
    ref64 = ref.double().to(device)
    # Honest float32 formulations differ from float64 by about 2e-5 here (a running sum over the 32
    # features in the worst order is bounded by ln_atol: 5.1e-4); E[x^2] - E[x]^2 by 4.3e-3.
    expect_close(module(x), ref64(x.double()).float(), atol=max(1e-4, ln_atol(x, ref64.weight)),
                 what=f"{what}(100 + N(0, 1) inputs)",
                 mistakes={"the variance is computed as mean(x^2) - mean(x)^2, which loses its digits when "
                           "the mean is large; use mean((x - mean)^2)":
                           lambda: layer_norm(x, ref64.weight, ref64.bias, one_pass=True)}
                 | ln_mistakes(x, ref64.weight, ref64.bias))


def test_layernorm_float64(student, reference, device):
    """LayerNorm after .double() works in float64 and returns float64"""
    module, ref, what = student_ln(student, reference, device, seed=8, dtype=torch.float64)
    x = randn(4, 16, seed=9, device=device, dtype=torch.float64)
    ref = ref.to(device)
    expect_close(module(x), ref(x), what=f"{what}.double()(float64 x)", mistakes=ln_mistakes(x, ref.weight, ref.bias))


def ln_input_grad(x, weight, bias, g, **mistake) -> torch.Tensor:
    x = x.double().detach().requires_grad_()
    layer_norm(x, weight.double(), bias.double(), **mistake).backward(g.double())
    return x.grad.float()


@pytest.mark.points(3)
def test_layernorm_backward(student, reference, device):
    """LayerNorm's gradients: input, weight and bias"""
    module, ref, what = student_ln(student, reference, device, seed=10)
    x = randn(3, 4, 16, seed=11, device=device, scale=1.5, shift=-0.3)
    g = randn(3, 4, 16, seed=12, device=device)
    ref64 = ref.double().to(device)
    result = backward(module, x.clone().requires_grad_(), grad_output=g)
    x64 = x.double().requires_grad_()
    expected = backward(ref64, x64, grad_output=g.double())
    expect_close(result.value, expected.value.float(), what=f"{what}(x)",
                 mistakes=ln_mistakes(x, ref64.weight, ref64.bias))
    w, b = ref64.weight.detach(), ref64.bias.detach()
    expect_close(result.input_grads[0] if result.input_grads else None, expected.input_grads[0].float(),
                 what=f"the gradient of {what}(x) with respect to x", mistakes={
                     "the mean is detached from the graph (no .detach(), .item() or torch.no_grad())":
                         lambda: ln_input_grad(x, w, b, g, detach=("mean",)),
                     "the variance is detached from the graph (no .detach(), .item() or torch.no_grad())":
                         lambda: ln_input_grad(x, w, b, g, detach=("var",)),
                     "the mean and the variance are detached from the graph":
                         lambda: ln_input_grad(x, w, b, g, detach=("mean", "var"))})
    for name in ("weight", "bias"):
        got = result.param_grads.get(name)
        if got is None:
            raise CheckFailure(f"{what}: no gradient reached {name}; it must be an nn.Parameter used in forward")
        expect_close(got, expected.param_grads[name].float(), what=f"the gradient of {what}.{name}")
