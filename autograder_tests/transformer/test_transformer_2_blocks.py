"""Hidden tests of stage `transformer`: FeedForward and TransformerBlock.

The student's module is loaded with the weights of a reference module built from
a fixed seed and compared in eval mode, forward and backward, with a float64
copy of that reference (see transformer_checks.py for the known mistakes).
"""

import pytest
import torch

from grader.testing import CheckFailure, backward, expect_close, expect_tensor, randn, tensor_mismatch
from transformer_checks import (ACTIVATIONS, D_MODEL, HEADS, block_mistakes, build_reference, expect_keys,
                                expect_param_grads, ffn_with, float64_copy, own_width, reference_backward,
                                student_like)
from transformer_parts import (FFN_PARTS, block_grads, block_mistakes_of, check_gelu, compose_block, expect_close_ecf,
                               expect_grads_ecf, once, upstream_notes)


# ---- FeedForward --------------------------------------------------------------------

FFN_CASES = {"FeedForward(8)": ((8,), {}), "FeedForward(8, 12)": ((8, 12), {}),
             "FeedForward(8, 12, bias=False)": ((8, 12), {"bias": False})}


@pytest.mark.parametrize("case", list(FFN_CASES))
def test_ffn_parameters(student, reference, case):
    """{case} has fc and proj with the contract's shapes"""
    args, kwargs = FFN_CASES[case]
    expected = reference.FeedForward(*args, **kwargs).state_dict()
    module = student.transformer.FeedForward(*args, **kwargs)
    expect_keys(module.state_dict(), expected, case, module)


def test_ffn_explicit_defaults(student, reference, device):
    """FeedForward(8, d_ff=None, bias=True, dropout=0.0), the defaults passed explicitly: 4 * d_model hidden
    units, biases, and no dropout in training mode"""
    kwargs = dict(d_ff=None, bias=True, dropout=0.0)
    what = "FeedForward(8, d_ff=None, bias=True, dropout=0.0)"
    expect_keys(student.transformer.FeedForward(8, **kwargs).state_dict(), reference.FeedForward(8).state_dict(),
                what)
    ref = build_reference(reference, "FeedForward", 8, seed=25)
    module = student_like(student, ref, "FeedForward", 8, device=device, what=what, **kwargs)
    module.train()
    x = randn(3, 5, 8, seed=26, device=device)
    first, second = module(x), module(x)
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor) and not torch.equal(first, second):
        raise CheckFailure(f"{what} in training mode: two calls differ, so dropout is on with dropout=0.0")


@pytest.mark.points(3)
def test_ffn_gelu(student, reference, device):
    """FeedForward's activation is the exact GELU (fc and proj set to identities)"""
    check_gelu(student, reference, device)


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
    if tensor_mismatch(first, expected) is not None and upstream_notes(student, reference, device, FFN_PARTS):
        # FeedForward's values are charged by the tests above: dropout is judged against your own
        # FeedForward(16) without dropout, on the same weights.
        plain = student_like(student, ref, "FeedForward", 16, device=device, what="FeedForward(16)")
        expected = plain(x)
    expect_close(first, expected, what="FeedForward(16, dropout=0.5) in eval mode (dropout must be off)")
    expect_close(second, expected, what="FeedForward(16, dropout=0.5) in eval mode, called a second time")
    module.train()
    out = module(x)
    expect_tensor(out, what="FeedForward(16, dropout=0.5) in training mode", shape=expected.shape)
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
    # ffn's width is that of your own FeedForward(32, d_ff): one that ignores d_ff is charged by test_ffn_*.
    width = own_width(student, "FeedForward", D_MODEL, key="fc.weight", d_ff=d_ff)
    expected = reference.TransformerBlock(D_MODEL, HEADS, width).state_dict()
    module = student.transformer.TransformerBlock(D_MODEL, HEADS, d_ff)
    expect_keys(module.state_dict(), expected, f"TransformerBlock({D_MODEL}, {HEADS}, d_ff={d_ff})", module)


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
        calls = {f"{what}(x)": module(x), f"{what}(x, causal=True)": module(x, causal=True)} if causal else \
            {f"{what}(x, causal=False)": module(x, causal=False)}
        for call, got in calls.items():   # causal omitted and passed as its default True
            expect_close_ecf(got, expected, what=call,
                             mistakes=block_mistakes(ref64, x.double(), torch.float32, causal),
                             own=lambda: compose_block(module, x, causal),
                             own_mistakes=block_mistakes_of(module, x, causal),
                             notes=lambda: upstream_notes(student, reference, device))


@pytest.mark.points(3)
def test_block_backward(student, reference, device):
    """TransformerBlock gradients: the input and every parameter"""
    what = f"TransformerBlock({D_MODEL}, {HEADS}, d_ff=48)"
    # The reference's ffn has the width of your own FeedForward(32, 48) (a wrong one is charged by test_ffn_*).
    ref = build_reference(reference, "TransformerBlock", D_MODEL, HEADS, seed=32,
                          d_ff=own_width(student, "FeedForward", D_MODEL, key="fc.weight", d_ff=48))
    module = student_like(student, ref, "TransformerBlock", D_MODEL, HEADS, device=device, what=what, d_ff=48)
    x = randn(2, 6, D_MODEL, seed=33, device=device)
    g = randn(2, 6, D_MODEL, seed=34, device=device)
    result = backward(module, x.clone().requires_grad_(), grad_output=g)
    ref64 = float64_copy(ref, device)
    value, input_grads, param_grads = reference_backward(ref64, x.double().requires_grad_(), grad_output=g.double())
    notes = once(lambda: upstream_notes(student, reference, device))
    own = once(lambda: block_grads(module, x, g))   # (dx, parameter gradients) through your own parts
    expect_close_ecf(result.value, value, what=f"{what}(x)", notes=notes, own=lambda: compose_block(module, x),
                     mistakes=block_mistakes(ref64, x.double(), torch.float32),
                     own_mistakes=block_mistakes_of(module, x))
    expect_close_ecf(result.input_grads[0] if result.input_grads else None, input_grads[0],
                     what=f"the gradient of {what}(x) with respect to x", notes=notes, own=lambda: own()[0])
    expect_grads_ecf(result.param_grads, param_grads, what, notes=notes, own=lambda: own()[1], module=module)


@pytest.mark.points(2)
def test_block_dropout_eval(student, reference, device):
    """TransformerBlock(32, 4, dropout=0.5) in eval mode is deterministic and equals the reference"""
    module, ref, what = student_block(student, reference, device, seed=35, dropout=0.5)
    x = randn(2, 8, D_MODEL, seed=36, device=device)
    ref64 = float64_copy(ref, device)
    with torch.no_grad():
        expected = ref64(x.double()).float()
    notes = once(lambda: upstream_notes(student, reference, device))
    own = once(lambda: compose_block(module, x))
    for attempt in ("", ", called a second time"):
        expect_close_ecf(module(x), expected, what=f"{what} in eval mode (dropout must be off){attempt}",
                         notes=notes, own=own, mistakes=block_mistakes(ref64, x.double(), torch.float32),
                         own_mistakes=block_mistakes_of(module, x))


def zero_share(part, x) -> float:
    """The share of exact zeros in part(x), the part in training mode on x's device."""
    part.to(str(x.device))
    part.train()
    out = part(x)
    return (out == 0).double().mean().item() if isinstance(out, torch.Tensor) else 0.0


@pytest.mark.points(2)
def test_block_dropout_train(student, reference, device):
    """TransformerBlock(32, 4, dropout=0.5) passes its dropout on to attn and ffn (training mode)"""
    module, ref, what = student_block(student, reference, device, seed=37, dropout=0.5)
    module.train()
    x = randn(2, 8, D_MODEL, seed=38, device=device)
    alone = {"attn": lambda: student.attention.MultiHeadAttention(D_MODEL, HEADS, dropout=0.5),
             "ffn": lambda: student.transformer.FeedForward(D_MODEL, dropout=0.5)}
    for name in ("attn", "ffn"):
        zeros = zero_share(getattr(module, name), x)
        if zeros < 0.2:   # dropout 0.5 on out's / proj's output zeroes about half of it
            if zero_share(alone[name](), x) < 0.2:
                continue   # the same part built alone drops nothing either: charged by its own dropout test
            raise CheckFailure(f"{what} in training mode: only {zeros:.0%} of {name}'s outputs are 0; the block "
                               f"must build {name} with dropout=dropout (0.5 here), which zeroes about half")
