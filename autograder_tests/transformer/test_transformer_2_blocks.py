"""Hidden tests of stage `transformer`: FeedForward and TransformerBlock.

The student's module is loaded with the weights of a reference module built from
a fixed seed and compared in eval mode, forward and backward, with a float64
copy of that reference (see transformer_checks.py for the known mistakes).
"""

import pytest
import torch

from grader.checks import CheckFailure, expect_close
from grader.remote import backward
from transformer_checks import (ACTIVATIONS, D_MODEL, HEADS, block_mistakes, build_reference, expect_keys,
                                expect_param_grads, ffn_with, float64_copy, gelu_inputs, randn,
                                reference_backward, student_like)


# ---- FeedForward --------------------------------------------------------------------

FFN_CASES = {"FeedForward(8)": ((8,), {}), "FeedForward(8, 12)": ((8, 12), {}),
             "FeedForward(8, 12, bias=False)": ((8, 12), {"bias": False})}


@pytest.mark.parametrize("case", list(FFN_CASES))
def test_ffn_parameters(student, reference, case):
    """{case} has fc and proj with the contract's shapes"""
    args, kwargs = FFN_CASES[case]
    expected = reference.FeedForward(*args, **kwargs).state_dict()
    expect_keys(student.transformer.FeedForward(*args, **kwargs).state_dict(), expected, case)


@pytest.mark.points(3)
def test_ffn_gelu(student, reference, device):
    """FeedForward's activation is the exact GELU (fc and proj set to identities)"""
    ref = reference.FeedForward(8, 8)
    with torch.no_grad():
        for layer in (ref.fc, ref.proj):
            layer.weight.copy_(torch.eye(8))
            layer.bias.zero_()
    module = student_like(student, ref, "FeedForward", 8, 8, device=device, what="FeedForward(8, 8)")
    x = gelu_inputs(device)
    x64 = x.double()
    expect_close(module(x), torch.nn.functional.gelu(x64).float(),
                 what="FeedForward(8, 8) with identity fc and proj, i.e. gelu(x), at x in [-3, 3]",
                 mistakes={d: (lambda f=f: f(x64).float()) for d, f in ACTIVATIONS.items()})


@pytest.mark.points(3)
def test_ffn_forward_backward(student, reference, device):
    """FeedForward(16, 24): output and gradients with the reference's weights"""
    ref = build_reference(reference, "FeedForward", 16, 24, seed=20)
    module = student_like(student, ref, "FeedForward", 16, 24, device=device, what="FeedForward(16, 24)")
    x = randn(2, 5, 16, seed=21, device=device, scale=2.0)
    g = randn(2, 5, 16, seed=22, device=device)
    ref64 = float64_copy(ref, device)
    result = backward(module, x.clone().requires_grad_(), grad_output=g)
    value, input_grads, param_grads = reference_backward(ref64, x.double().requires_grad_(),
                                                         grad_output=g.double())
    with torch.no_grad():
        mistakes = {d: (lambda f=f: ffn_with(ref64, x.double(), f).float()) for d, f in ACTIVATIONS.items()}
    expect_close(result.value, value, what="FeedForward(16, 24)(x)", mistakes=mistakes)
    expect_close(result.input_grads[0] if result.input_grads else None, input_grads[0],
                 what="the gradient of FeedForward(16, 24)(x) with respect to x")
    expect_param_grads(result.param_grads, param_grads, "FeedForward(16, 24)")


@pytest.mark.points(2)
def test_ffn_dropout(student, reference, device):
    """FeedForward(16, dropout=0.5): off in eval mode; in training mode zeroes about half the outputs of proj"""
    ref = build_reference(reference, "FeedForward", 16, seed=23, dropout=0.5)
    module = student_like(student, ref, "FeedForward", 16, device=device, what="FeedForward(16, dropout=0.5)",
                          dropout=0.5)
    x = randn(4, 8, 16, seed=24, device=device)
    expected = float64_copy(ref, device)(x.double()).float()
    first, second = module(x), module(x)
    expect_close(first, expected, what="FeedForward(16, dropout=0.5) in eval mode (dropout must be off)")
    expect_close(second, expected, what="FeedForward(16, dropout=0.5) in eval mode, called a second time")
    module.train()
    out = module(x)
    if not isinstance(out, torch.Tensor) or out.shape != expected.shape:
        raise CheckFailure("FeedForward(16, dropout=0.5) in training mode: expected a tensor of shape "
                           f"{tuple(expected.shape)}")
    out, expected = out.double().cpu(), expected.double().cpu()
    zero = out == 0
    share = zero.double().mean().item()
    what = "FeedForward(16, dropout=0.5) in training mode"
    if not zero.any():
        if torch.allclose(out, expected, atol=1e-5, rtol=1e-4):
            raise CheckFailure(f"{what}: the output equals the eval-mode output: dropout (on the output of "
                               "proj) is never applied")
        raise CheckFailure(f"{what}: no output is exactly 0: looks like dropout is applied before proj; "
                           "the contract applies it to the output of proj")
    if not 0.35 <= share <= 0.65:
        raise CheckFailure(f"{what}: {share:.0%} of the outputs are 0, expected about 50% (p=0.5)")
    kept, scaled = out[~zero], 2.0 * expected[~zero]
    if not torch.allclose(kept, scaled, atol=2e-5, rtol=1e-4):
        hint = ("looks like the kept values are not scaled by 1 / (1 - p)"
                if torch.allclose(kept, expected[~zero], atol=2e-5, rtol=1e-4)
                else "the kept values should be the eval-mode values times 1 / (1 - p) = 2")
        raise CheckFailure(f"{what}: {hint}")


# ---- TransformerBlock --------------------------------------------------------------

@pytest.mark.parametrize("d_ff", [None, 48])
def test_block_parameters(student, reference, d_ff):
    """TransformerBlock(32, 4, d_ff={d_ff}) has ln1, attn, ln2 and ffn with the contract's keys"""
    expected = reference.TransformerBlock(D_MODEL, HEADS, d_ff).state_dict()
    expect_keys(student.transformer.TransformerBlock(D_MODEL, HEADS, d_ff).state_dict(), expected,
                f"TransformerBlock({D_MODEL}, {HEADS}, d_ff={d_ff})")


def student_block(student, reference, device, seed, **kwargs):
    ref = build_reference(reference, "TransformerBlock", D_MODEL, HEADS, seed=seed, **kwargs)
    what = f"TransformerBlock({D_MODEL}, {HEADS}{''.join(f', {k}={v}' for k, v in kwargs.items())})"
    module = student_like(student, ref, "TransformerBlock", D_MODEL, HEADS, device=device, what=what, **kwargs)
    return module, ref, what


@pytest.mark.points(3)
@pytest.mark.parametrize("causal", [True, False])
def test_block_forward(student, reference, device, causal):
    """TransformerBlock forward, pre-norm with residuals (causal={causal})"""
    module, ref, what = student_block(student, reference, device, seed=30)
    x = randn(2, 8, D_MODEL, seed=31, device=device)
    ref64 = float64_copy(ref, device)
    with torch.no_grad():
        expected = ref64(x.double(), causal=causal).float()
        got = module(x) if causal else module(x, causal=False)
        call = f"{what}(x)" if causal else f"{what}(x, causal=False)"
        expect_close(got, expected, what=call, mistakes=block_mistakes(ref64, x.double(), torch.float32, causal))


@pytest.mark.points(3)
def test_block_backward(student, reference, device):
    """TransformerBlock gradients: the input and every parameter"""
    module, ref, what = student_block(student, reference, device, seed=32, d_ff=48)
    x = randn(2, 6, D_MODEL, seed=33, device=device)
    g = randn(2, 6, D_MODEL, seed=34, device=device)
    result = backward(module, x.clone().requires_grad_(), grad_output=g)
    value, input_grads, param_grads = reference_backward(float64_copy(ref, device), x.double().requires_grad_(),
                                                         grad_output=g.double())
    expect_close(result.value, value, what=f"{what}(x)")
    expect_close(result.input_grads[0] if result.input_grads else None, input_grads[0],
                 what=f"the gradient of {what}(x) with respect to x")
    expect_param_grads(result.param_grads, param_grads, what)


@pytest.mark.points(2)
def test_block_dropout_eval(student, reference, device):
    """TransformerBlock(32, 4, dropout=0.5) in eval mode is deterministic and equals the reference"""
    module, ref, what = student_block(student, reference, device, seed=35, dropout=0.5)
    x = randn(2, 8, D_MODEL, seed=36, device=device)
    with torch.no_grad():
        expected = float64_copy(ref, device)(x.double()).float()
    expect_close(module(x), expected, what=f"{what} in eval mode (dropout must be off)")
    expect_close(module(x), expected, what=f"{what} in eval mode, called a second time")
