"""Hidden tests of stage `attention`: MultiHeadAttention.

One set of weights is loaded into the student's module and into the reference's
(the contract fixes the state-dict keys qkv.weight, qkv.bias, out.weight,
out.bias), and outputs and gradients are compared with the reference run in
float64. Each known mistake is a variant of `mha` below, on the same weights.
"""

import math

import pytest
import torch

from attention_checks import expect_mha, mha_own_sdpa, sdpa_blamed, sdpa_note
from grader.testing import (CheckFailure, backward, expect_close, expect_equal, expect_raises, expect_tensor,
                            randn, tensor_mismatch, tolerance)


def weights(d_model: int, bias: bool, seed: int) -> dict:
    """A float32 state dict; weights of std 0.4 give scores of a few units, so wrong scales show."""
    sd = {"qkv.weight": randn(3 * d_model, d_model, seed=seed, scale=0.4),
          "out.weight": randn(d_model, d_model, seed=seed + 1, scale=0.4)}
    if bias:
        sd |= {"qkv.bias": randn(3 * d_model, seed=seed + 2, scale=0.2),
               "out.bias": randn(d_model, seed=seed + 3, scale=0.2)}
    return {name: sd[name] for name in ("qkv.weight", "qkv.bias", "out.weight", "out.bias") if name in sd}


def student_mha(student, d_model, n_heads, sd, device, bias=True, dropout=0.0, eval_mode=True):
    module = student.attention.MultiHeadAttention(d_model, n_heads, bias=bias, dropout=dropout)
    module.load_state_dict(sd)
    module.to(device)
    if eval_mode:
        module.eval()
    return module


# ---- the reference computation and its known mistakes (float64, CPU) ------------------------

def mha(sd, x, n_heads, causal, *, order="qkv", split="ok", merge="ok", scale=None, project=True):
    x = x.detach().cpu().double()
    B, T, C = x.shape
    H, D = n_heads, C // n_heads
    h = x @ sd["qkv.weight"].double().T
    if "qkv.bias" in sd:
        h = h + sd["qkv.bias"].double()
    thirds = dict(zip("qkv", h.split(C, dim=-1)))
    q, k, v = (thirds[name] for name in order)
    to_heads = {"ok": lambda t: t.reshape(B, T, H, D).transpose(1, 2),
                "d_head first": lambda t: t.reshape(B, T, D, H).permute(0, 3, 1, 2),
                "no transpose": lambda t: t.reshape(B, H, T, D)}[split]
    q, k, v = to_heads(q), to_heads(k), to_heads(v)
    scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(D) if scale is None else scale)
    if causal:
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf)
    w = (scores - scores.amax(-1, keepdim=True)).exp()
    y = (w / w.sum(-1, keepdim=True)) @ v                                      # (B, H, T, D)
    y = {"ok": lambda: y.transpose(1, 2).reshape(B, T, C),
         "no transpose": lambda: y.reshape(B, T, C),
         "inverse": lambda: y.permute(0, 2, 3, 1).reshape(B, T, C)}[merge]()
    if not project:
        return y
    y = y @ sd["out.weight"].double().T
    return y + sd["out.bias"].double() if "out.bias" in sd else y


def mha_mistakes(sd, x, n_heads, causal) -> dict:
    C = x.shape[-1]
    cases = {
        "the heads are split the wrong way: view (B, T, n_heads, d_head), then transpose to "
        "(B, n_heads, T, d_head) (it was viewed (B, T, d_head, n_heads))": dict(split="d_head first"),
        "the heads are split the wrong way: view (B, T, n_heads, d_head), then transpose to "
        "(B, n_heads, T, d_head) (it was viewed (B, T, d_head, n_heads), merged back the same way)":
            dict(split="d_head first", merge="inverse"),
        "the heads are split the wrong way: view (B, T, n_heads, d_head), THEN transpose; a direct "
        "view as (B, n_heads, T, d_head) mixes positions": dict(split="no transpose"),
        "the heads are split the wrong way: view (B, T, n_heads, d_head), THEN transpose; a direct "
        "view as (B, n_heads, T, d_head) mixes positions (merged back the same way)":
            dict(split="no transpose", merge="no transpose"),
        "the heads are merged without moving them back: (B, n_heads, T, d_head) must be transposed to "
        "(B, T, n_heads, d_head) before the view to (B, T, d_model)": dict(merge="no transpose"),
        "the scores are scaled by 1/sqrt(d_model); each head scales by 1/sqrt(d_head)":
            dict(scale=1 / math.sqrt(C)),
        "the scores are not scaled by 1/sqrt(d_head)": dict(scale=1.0),
        f"the causal flag is ignored (causal={causal} must {'' if causal else 'not '}mask the future)":
            dict(causal=not causal),
        "the output projection `out` is not applied": dict(project=False),
    }
    for order in ("kqv", "qvk", "vqk", "kvq", "vkq"):
        cases[f"q, k and v are taken from the wrong thirds of qkv(x) (in the order {' | '.join(order)}); "
              "the contract's order is q | k | v"] = dict(order=order)
    found = {}
    for description, change in cases.items():
        args = dict(causal=causal) | change
        found[description] = (lambda a=args: mha(sd, x, n_heads, **a))
    return found


def expected_and_mistakes(sd, x, n_heads, causal, device):
    cast = dict(dtype=torch.float32, device=device)
    return (mha(sd, x, n_heads, causal).to(**cast),
            {d: (lambda f=f: f().to(**cast)) for d, f in mha_mistakes(sd, x, n_heads, causal).items()})


# ---- construction and state dict -------------------------------------------------------------

@pytest.mark.points(2)
@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_keys(student, bias):
    """MultiHeadAttention(16, 4, bias={bias}) has the contract's state-dict keys and shapes"""
    module = student.attention.MultiHeadAttention(16, 4, bias=bias)
    sd = module.state_dict()
    expected = {name: list(t.shape) for name, t in weights(16, bias, seed=1).items()}
    got = {str(name): list(getattr(t, "shape", ())) for name, t in dict(sd).items()}
    expect_equal(got, expected, what=f"MultiHeadAttention(16, 4, bias={bias}).state_dict() keys and shapes "
                 "(qkv = nn.Linear(d_model, 3 * d_model, bias), out = nn.Linear(d_model, d_model, bias))")


@pytest.mark.parametrize("d_model, n_heads", [(10, 3), (16, 5)])
def test_heads_must_divide(student, d_model, n_heads):
    """MultiHeadAttention({d_model}, {n_heads}) raises ValueError (d_model % n_heads != 0)"""
    with expect_raises("ValueError", what=f"MultiHeadAttention({d_model}, {n_heads})"):
        student.attention.MultiHeadAttention(d_model, n_heads)


# ---- outputs ---------------------------------------------------------------------------------

CONFIGS = {"d_model=16, 4 heads": (16, 4, True), "d_model=12, 3 heads, no bias": (12, 3, False),
           "d_model=8, 1 head": (8, 1, True), "d_model=16, 8 heads": (16, 8, True)}


@pytest.mark.points(3)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_mha_output(student, device, config, causal):
    """MultiHeadAttention({config}) output on x (2, 6, d_model), causal={causal}"""
    d_model, n_heads, bias = CONFIGS[config]
    sd = weights(d_model, bias, seed=2)
    x = randn(2, 6, d_model, seed=3).to(device)
    module = student_mha(student, d_model, n_heads, sd, device, bias=bias)
    expected, mistakes = expected_and_mistakes(sd, x, n_heads, causal, device)
    with sdpa_blamed(student, device, causal):
        got = module(x, causal=causal)
    expect_mha(got, expected, mistakes=mistakes, student=student, sd=sd, x=x,
               n_heads=n_heads, causal=causal, device=device,
               what=f"MultiHeadAttention({d_model}, {n_heads}, bias={bias})(x, causal={causal})")


def test_mha_default_causal_train_mode(student, device):
    """MultiHeadAttention is causal by default, and with dropout 0 training mode changes nothing"""
    sd = weights(16, True, seed=4)
    x = randn(3, 5, 16, seed=5).to(device)
    module = student_mha(student, 16, 4, sd, device, eval_mode=False)
    expected, mistakes = expected_and_mistakes(sd, x, 4, True, device)
    with sdpa_blamed(student, device, True):
        got = module(x)
    expect_mha(got, expected, mistakes=mistakes, what="MultiHeadAttention(16, 4)(x) in training mode",
               student=student, sd=sd, x=x, n_heads=4, causal=True, device=device)


def test_mha_defaults(student, device):
    """MultiHeadAttention(16, 4) with bias and dropout omitted: biases, no dropout; forward causal=True as default"""
    sd = weights(16, True, seed=15)
    module = student.attention.MultiHeadAttention(16, 4)
    got = {str(name): list(getattr(t, "shape", ())) for name, t in dict(module.state_dict()).items()}
    expect_equal(got, {name: list(t.shape) for name, t in sd.items()},
                 what="MultiHeadAttention(16, 4).state_dict() keys and shapes (bias defaults to True)")
    module.load_state_dict(sd)
    module.to(device)
    module.train()   # dropout defaults to 0.0: training mode changes nothing
    x = randn(2, 5, 16, seed=16).to(device)
    expected, mistakes = expected_and_mistakes(sd, x, 4, True, device)
    with sdpa_blamed(student, device, True):
        first, second, third = module(x), module(x), module(x, causal=True)
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor) and first.shape == second.shape \
            and not torch.equal(first, second):
        raise CheckFailure("MultiHeadAttention(16, 4) in training mode: two calls gave different outputs, so "
                           "dropout is on although the dropout argument defaults to 0.0")
    for call, got in (("(x)", first), ("(x, causal=True)", third)):
        expect_mha(got, expected, mistakes=mistakes, student=student, sd=sd, x=x, n_heads=4, causal=True,
                   device=device, what=f"MultiHeadAttention(16, 4){call} in training mode")


@pytest.mark.points(2)
def test_mha_is_causal(student, device):
    """with causal=True, changing later tokens never changes earlier outputs"""
    sd = weights(16, True, seed=6)
    x = randn(2, 8, 16, seed=7).to(device)
    x2 = x.clone()
    x2[:, 5:] = randn(2, 3, 16, seed=8).to(device)
    module = student_mha(student, 16, 4, sd, device)
    with sdpa_blamed(student, device, True):
        first, second = module(x, causal=True), module(x2, causal=True)
    changed = (first[:, :5] - second[:, :5]).abs().amax(dim=(0, 2))
    # Within the tolerance: masked weights tiny but not exactly 0, charged by the sdpa tests.
    if (changed > tolerance(first.dtype, device)[0]).any():
        if sdpa_note(student, device, True) is not None and own_sdpa_matches(
                student, sd, ((first, x), (second, x2))):
            return   # the leak is your scaled_dot_product_attention's, charged by its tests
        t = int(changed.argmax())
        leak = (f"the output at position {t} changed by {changed[t].item():.3g} when only tokens 5..7 changed: "
                "a position sees the future")
        # A mistake that mixes positions (heads split or merged the wrong way) leaks too: name it.
        for description, make in mha_mistakes(sd, x, 4, True).items():
            if tensor_mismatch(first, make().to(dtype=torch.float32, device=device)) is None:
                raise CheckFailure(f"{leak}: looks like {description}")
        raise CheckFailure(f"{leak}. With causal=True, position t may attend positions <= t only")


def own_sdpa_matches(student, sd, pairs) -> bool:
    """Each (output, x) is MultiHeadAttention(16, 4)(x) built on the student's own sdpa."""
    try:
        return all(tensor_mismatch(got, mha_own_sdpa(student, sd, x, 4, True)) is None for got, x in pairs)
    except Exception:  # noqa: BLE001 -- an sdpa that cannot be used that way
        return False


# ---- gradients -------------------------------------------------------------------------------

@pytest.mark.points(3)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_mha_gradients(student, reference, device, causal):
    """gradients of x and of every parameter of MultiHeadAttention(16, 4), causal={causal}"""
    sd = weights(16, True, seed=9)
    x = randn(2, 5, 16, seed=10).to(device).requires_grad_(True)
    grad_out = randn(2, 5, 16, seed=11).to(device)
    module = student_mha(student, 16, 4, sd, device)
    with sdpa_blamed(student, device, causal):
        got = backward(module, x, causal=causal, grad_output=grad_out)
    ref = reference.MultiHeadAttention(16, 4).double()
    ref.load_state_dict({name: t.double() for name, t in sd.items()})
    ref.eval()
    x64 = x.detach().cpu().double().requires_grad_(True)
    ref(x64, causal=causal).backward(grad_out.cpu().double())
    expected = {"value": mha(sd, x, 4, causal).to(dtype=torch.float32, device=device),
                "x": x64.grad.float().to(device)}
    expected |= {name: param.grad.float().to(device) for name, param in ref.named_parameters()}
    if not got.input_grads or got.input_grads[0] is None:
        raise CheckFailure("no gradient reaches x: the output must be computed from it with torch operations")
    missing = [name for name, _ in ref.named_parameters() if got.param_grads.get(name) is None]
    if missing:
        raise CheckFailure(f"no gradient for parameter {missing[0]}: is it used in forward?")
    actual = {"value": got.value, "x": got.input_grads[0]} | {name: got.param_grads[name] for name in expected
                                                              if name not in ("value", "x")}
    note = None
    if any(tensor_mismatch(actual[name], want) is not None for name, want in expected.items()):
        note = sdpa_note(student, device, causal)
        if note is not None:   # charged by the sdpa tests: compare with gradients through your own sdpa
            try:
                value, dx, grads = mha_own_sdpa(student, sd, x, 4, causal, grad_output=grad_out)
                expected = {"value": value, "x": dx} | grads
            except Exception:  # noqa: BLE001 -- your sdpa cannot be chained: compared with the reference
                pass
    labels = {"value": f"the output of MultiHeadAttention(16, 4)(x, causal={causal})",
              "x": "the gradient with respect to x"}
    # The output is compared first: a known mistake in the forward is named there.
    mistakes = {"value": {d: (lambda f=f: f().to(dtype=torch.float32, device=device))
                          for d, f in mha_mistakes(sd, x, 4, causal).items()}}
    for name, want in expected.items():
        try:
            expect_close(actual[name], want, what=labels.get(name, f"the gradient of {name}"),
                         mistakes=mistakes.get(name))
        except CheckFailure as exc:
            if note is None:
                raise
            raise CheckFailure(f"{exc}\n(compared with MultiHeadAttention built on your own "
                               f"scaled_dot_product_attention, because {note})") from None


# ---- dropout ---------------------------------------------------------------------------------

@pytest.mark.points(2)
def test_mha_dropout_off_in_eval(student, device):
    """MultiHeadAttention(16, 4, dropout=0.5) in eval mode is deterministic and exact"""
    sd = weights(16, True, seed=12)
    x = randn(2, 6, 16, seed=13).to(device)
    module = student_mha(student, 16, 4, sd, device, dropout=0.5)
    expected, mistakes = expected_and_mistakes(sd, x, 4, True, device)
    with sdpa_blamed(student, device, True):
        first, second = module(x, causal=True), module(x, causal=True)   # the default is test_mha_defaults's
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor) and first.shape == second.shape \
            and not torch.equal(first, second):
        raise CheckFailure("two calls in eval mode with dropout=0.5 gave different outputs: dropout is applied "
                           "in eval mode too. Use nn.Dropout modules (or F.dropout(..., training=self.training)), "
                           "which do nothing after .eval()")
    expect_mha(first, expected, what="MultiHeadAttention(16, 4, dropout=0.5) in eval mode", mistakes=mistakes,
               student=student, sd=sd, x=x, n_heads=4, causal=True, device=device)


@pytest.mark.points(2)
def test_mha_dropout_in_training(student, device):
    """in training mode, dropout applies to the attention weights and to the output of `out`"""
    # q = k = 0 and v = 1: every weight is 1/8 and every head outputs exactly 1; out is the identity.
    # Dropout of the output of `out` makes entries 0 or 2 (1 / (1 - p)); dropout of the weights
    # makes a head's output 2 * (kept weights) / 8, so other values appear.
    C, T = 16, 8
    sd = {"qkv.weight": torch.zeros(3 * C, C), "qkv.bias": torch.cat([torch.zeros(2 * C), torch.ones(C)]),
          "out.weight": torch.eye(C), "out.bias": torch.zeros(C)}
    x = randn(4, T, C, seed=14).to(device)
    module = student_mha(student, C, 4, sd, device, dropout=0.5, eval_mode=False)
    with sdpa_blamed(student, device, False):
        y = module(x, causal=False)
    expect_tensor(y, what=f"MultiHeadAttention({C}, 4, dropout=0.5) in training mode", shape=(4, T, C))
    y = y.detach().cpu().double()
    if torch.allclose(y, torch.ones_like(y)):
        raise CheckFailure("with dropout=0.5 in training mode the output is exactly the dropout-free one: "
                           "dropout is not applied (nn.Dropout on the attention weights and on out's output)")
    zeros = (y == 0).double().mean().item()
    if zeros < 0.25:
        raise CheckFailure(f"only {zeros:.0%} of the outputs are zeroed with dropout=0.5: dropout is not "
                           "applied to the output of `out` (the contract applies it there too)")
    if ((y - 2).abs() < 1e-6).logical_or(y == 0).all():
        raise CheckFailure("dropout is applied to the output of `out`, but not to the attention weights "
                           "(apply it to the weights before weights @ v)")
