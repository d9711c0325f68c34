"""Error carried forward in the `transformer` hidden tests (not a test file).

A block is built from the student's LayerNorm, MultiHeadAttention and FeedForward; GPT from
the student's embeddings, blocks and LayerNorm. Each of those parts has tests of its own, so a
mistake in a part (say the tanh GELU in FeedForward) is charged there, once. A test of the
whole compares first with the float64 reference; when that fails and a part's own check fails
too (`upstream_notes`), it compares with the whole rebuilt from the student's OWN parts, read
back as tensors from the worker and composed here (`compose_block`, `compose_gpt`, and the
chained backward passes `block_grads`, `gpt_grads`). Matching that passes; not matching fails
with the whole's own mistakes and a note naming the part's mistake and the test charging it.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

from grader.testing import (CheckFailure, backward, expect_close, randn, reduction_atol, tensor_mismatch,
                            tolerance)
from transformer_checks import (ACTIVATIONS, BLOCK_MISTAKES, D_MODEL, GPT_FORWARD_MISTAKES, HEADS, block_with,
                                build_reference, expect_param_grads, float64_copy, gelu_inputs, layer_norm,
                                student_like)

# The feedback names of the tests that own each part (their docstrings, as the student sees them).
GELU_TEST = "FeedForward's activation is the exact GELU (fc and proj set to identities)"
FFN_TEST = "FeedForward(16, 24): output and gradients with the reference's weights"
LN_TEST = "LayerNorm(16) with learned weight and bias on inputs shaped (B, T, C)"
LN_EPS_TEST = "LayerNorm uses eps inside the square root (the default eps, spread 0.002)"
LN64_TEST = "LayerNorm after .double() works in float64 and returns float64"
LN_GRAD_TEST = "LayerNorm's gradients: input, weight and bias"
BLOCK_TEST = "TransformerBlock forward, pre-norm with residuals (causal=True)"
MHA_TEST = "the attention stage's MultiHeadAttention tests"
EMB_TEST = "the embeddings stage's TokenEmbedding and PositionalEmbedding tests"


# ---- the parts' own checks (also run by their tests) -----------------------------------

def affine(y, weight=None, bias=None):
    """y * weight + bias in float64, each when given."""
    y = y if weight is None else y * weight.double()
    return y if bias is None else y + bias.double()


def ln_mistakes(x: torch.Tensor, weight=None, bias=None, eps: float = 1e-5) -> dict:
    x64 = x.double()
    return {
        "the variance is unbiased (divided by d - 1); LayerNorm divides by d (unbiased=False)":
            lambda: layer_norm(x64, weight, bias, eps, unbiased=True).to(x.dtype),
        "eps is added outside the square root: use sqrt(var + eps), not sqrt(var) + eps":
            lambda: layer_norm(x64, weight, bias, eps, eps_outside=True).to(x.dtype),
        "the result is divided by the variance instead of the standard deviation sqrt(var + eps)":
            lambda: ((x64 - x64.mean(-1, keepdim=True))
                     / (x64.var(-1, keepdim=True, unbiased=False) + eps)).to(x.dtype),
        "the weight and bias are not applied (y = normalised x * weight + bias)":
            lambda: layer_norm(x64, eps=eps).to(x.dtype),
        "the bias is added before multiplying by the weight: (x_hat + bias) * weight":
            lambda: ((layer_norm(x64, eps=eps) + bias.double()) * weight.double()).to(x.dtype),
        "the statistics are taken over dim 0; a layer norm normalises over the LAST dim":
            lambda: affine(layer_norm(x64.transpose(0, -1), eps=eps).transpose(0, -1), weight, bias).to(x.dtype),
        "the statistics are taken over the whole tensor; a layer norm normalises each vector (last dim)":
            lambda: affine(layer_norm(x64.reshape(1, -1), eps=eps).reshape(x.shape), weight, bias).to(x.dtype),
        "eps is ignored":
            lambda: layer_norm(x64, weight, bias, 0.0).to(x.dtype),
    }


def ln_atol(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> float:
    """atol for a layer norm of x (..., C) whose mean and variance are sums of C terms accumulated in
    x's dtype in any order (grader.engine.checks.reduction_atol), or the elementwise one when larger.

    An error γ_C·mean|x| in the mean moves each output by that over the standard deviation, and a
    relative error γ_C in the variance moves it by about γ_C·|x_hat|; both are scaled by |weight|.
    The numbers: C=16 inputs of spread 2 give ~5e-6 (the elementwise 1e-5 stays); C=32 inputs
    of mean 100 and spread 1 give 5.1e-4, against 4.3e-3 for mean(x^2) - mean^2, the named mistake."""
    x64 = x.detach().double()
    mean = x64.mean(-1, keepdim=True)
    std = (x64.var(-1, keepdim=True, unbiased=False) + eps).sqrt()
    spread = (x64.abs().mean(-1, keepdim=True) / std + ((x64 - mean) / std).abs().amax(-1, keepdim=True))
    gamma = reduction_atol(x.shape[-1], 1.0, dtype=x.dtype)
    base = tolerance(x.dtype, x.device)[0]
    return max(base, float(weight.detach().abs().max()) * gamma * float(spread.max()))


def check_gelu(student, reference, device) -> None:
    """FeedForward(8, 8) with identity fc and proj computes gelu(x) (test_ffn_gelu)."""
    ref = reference.FeedForward(8, 8)
    with torch.no_grad():
        for layer in (ref.fc, ref.proj):
            layer.weight.copy_(torch.eye(8))
            layer.bias.zero_()
    module = student_like(student, ref, "FeedForward", 8, 8, device=device, what="FeedForward(8, 8)")
    x = gelu_inputs(device)
    x64 = x.double()
    expect_close(module(x), F.gelu(x64).float(),
                 what="FeedForward(8, 8) with identity fc and proj, i.e. gelu(x), at x in [-3, 3]",
                 mistakes={d: (lambda f=f: f(x64).float()) for d, f in ACTIVATIONS.items()})


def _student_ln(student, reference, device, seed, dtype=torch.float32, **kwargs):
    ref = build_reference(reference, "LayerNorm", 16, seed=seed, **kwargs).to(dtype)
    module = student_like(student, ref, "LayerNorm", 16, device=device, what="LayerNorm(16)", dtype=dtype,
                          **kwargs)
    return module, ref.double().to(device)


def check_layernorm(student, reference, device) -> None:
    """LayerNorm(16) with learned weight and bias on a (2, 5, 16) input (test_layernorm_values)."""
    module, ref64 = _student_ln(student, reference, device, seed=0)
    x = randn(2, 5, 16, seed=3, device=device, scale=2.0, shift=0.5)
    expect_close(module(x), ref64(x.double()).float(), what="LayerNorm(16)(x of shape (2, 5, 16))",
                 mistakes=ln_mistakes(x, ref64.weight, ref64.bias))


def check_layernorm_eps(student, reference, device) -> None:
    """LayerNorm(16) of inputs with spread 0.002, where eps matters (test_layernorm_eps)."""
    module, ref64 = _student_ln(student, reference, device, seed=4)
    x = randn(3, 4, 16, seed=5, device=device, scale=0.002)
    expect_close(module(x), ref64(x.double()).float(), what="LayerNorm(16)(x with spread 0.002)",
                 mistakes=ln_mistakes(x, ref64.weight, ref64.bias))


def check_layernorm64(student, reference, device) -> None:
    """LayerNorm(16).double() in float64, where near misses show (test_layernorm_float64)."""
    module, ref64 = _student_ln(student, reference, device, seed=8, dtype=torch.float64)
    x = randn(4, 16, seed=9, device=device, dtype=torch.float64)
    expect_close(module(x), ref64(x), what="LayerNorm(16).double()(float64 x)",
                 mistakes=ln_mistakes(x, ref64.weight, ref64.bias))


def check_layernorm_grad(student, reference, device) -> None:
    """The input gradient of LayerNorm(16) (test_layernorm_backward)."""
    module, ref64 = _student_ln(student, reference, device, seed=10)
    x = randn(3, 4, 16, seed=11, device=device, scale=1.5, shift=-0.3)
    g = randn(3, 4, 16, seed=12, device=device)
    result = backward(module, x.clone().requires_grad_(), grad_output=g)
    expected = backward(ref64, x.double().requires_grad_(), grad_output=g.double())
    expect_close(result.input_grads[0] if result.input_grads else None, expected.input_grads[0].float(),
                 what="the gradient of LayerNorm(16)(x) with respect to x")


def check_ffn(student, reference, device) -> None:
    """FeedForward(16, 24)'s output with the reference's weights (test_ffn_forward_backward)."""
    ref = build_reference(reference, "FeedForward", 16, 24, seed=20)
    module = student_like(student, ref, "FeedForward", 16, 24, device=device, what="FeedForward(16, 24)")
    x = randn(2, 5, 16, seed=21, device=device, scale=2.0)
    expect_close(module(x), float64_copy(ref, device)(x.double()).float(), what="FeedForward(16, 24)(x)")


@functools.lru_cache(maxsize=1)
def _mha_checks():
    """The attention stage's MultiHeadAttention model and named mistakes (its test_mha.py), if present."""
    folder = Path(__file__).resolve().parent.parent / "attention"
    sys.path.insert(0, str(folder))   # for its own helpers (attention_checks)
    try:
        spec = importlib.util.spec_from_file_location("_attention_test_mha", folder / "test_mha.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except Exception:  # noqa: BLE001 -- only the names of the mistakes are lost
        return None
    finally:
        sys.path.remove(str(folder))


def check_mha(student, reference, device) -> None:
    """MultiHeadAttention(32, 4) of the student's attention.py against the reference."""
    ref = build_reference(reference, "MultiHeadAttention", D_MODEL, HEADS, seed=70)
    sd = {k: v.float() for k, v in ref.state_dict().items()}
    module = student.attention.MultiHeadAttention(D_MODEL, HEADS)
    module.load_state_dict(sd)
    module.to(device)
    module.eval()
    x = randn(2, 6, D_MODEL, seed=71, device=device)
    mha = _mha_checks()
    if mha is not None:
        expected, mistakes = mha.expected_and_mistakes(sd, x, HEADS, True, device)
    else:
        expected, mistakes = float64_copy(ref, device)(x.double()).float(), None
    expect_close(module(x), expected, what=f"MultiHeadAttention({D_MODEL}, {HEADS})(x)", mistakes=mistakes)


def check_block_wiring(student, reference, device) -> None:
    """The student's TransformerBlock equals the pre-norm wiring of its own parts (test_block_forward)."""
    ref = build_reference(reference, "TransformerBlock", D_MODEL, HEADS, seed=30)
    module = student_like(student, ref, "TransformerBlock", D_MODEL, HEADS, device=device,
                          what=f"TransformerBlock({D_MODEL}, {HEADS})")
    x = randn(2, 8, D_MODEL, seed=31, device=device)
    with torch.no_grad():
        expect_close(module(x), compose_block(module, x), what=f"TransformerBlock({D_MODEL}, {HEADS})(x)",
                     mistakes=block_mistakes_of(module, x))


def check_embeddings(student, device) -> None:
    """TokenEmbedding and PositionalEmbedding look their weights up (the embeddings stage)."""
    tok = student.embeddings.TokenEmbedding(11, 8)
    pos = student.embeddings.PositionalEmbedding(6, 8)
    w_tok, w_pos = randn(11, 8, seed=72), randn(6, 8, seed=73)
    tok.load_state_dict({"weight": w_tok})
    pos.load_state_dict({"weight": w_pos})
    tok.to(device)
    pos.to(device)
    ids = torch.tensor([[3, 0, 10], [7, 7, 1]], device=device)
    expect_close(tok(ids), w_tok.to(device)[ids], what="TokenEmbedding(11, 8)(ids)")
    expect_close(pos(5), w_pos[:5].to(device), what="PositionalEmbedding(6, 8)(5)")


FFN_PARTS = ((check_gelu, "FeedForward", GELU_TEST), (check_ffn, "FeedForward", FFN_TEST))
BLOCK_PARTS = ((check_layernorm, "LayerNorm", LN_TEST), (check_layernorm_eps, "LayerNorm", LN_EPS_TEST),
               (check_layernorm64, "LayerNorm", LN64_TEST), (check_layernorm_grad, "LayerNorm", LN_GRAD_TEST),
               (check_gelu, "FeedForward", GELU_TEST),
               (check_ffn, "FeedForward", FFN_TEST), (check_mha, "MultiHeadAttention", MHA_TEST))
GPT_PARTS = BLOCK_PARTS + ((check_block_wiring, "TransformerBlock", BLOCK_TEST),
                           (None, "TokenEmbedding and PositionalEmbedding", EMB_TEST))


def upstream_notes(student, reference, device, parts=BLOCK_PARTS) -> list[str]:
    """One line per part whose own check fails: what differs and which test charges it."""
    notes, seen = [], set()
    for check, name, test in parts:
        if name in seen:
            continue
        try:
            check(student, reference, device) if check else check_embeddings(student, device)
        except Exception as exc:  # noqa: BLE001 -- a part returning something odd fails its check too
            seen.add(name)
            first = str(exc).split("\n")[0]
            notes.append(f"your {name} differs from the contract's ({first}), charged by '{test}'")
    return notes


# ---- wholes rebuilt from the student's own parts ----------------------------------------

def compose_block(block, x, causal: bool = True):
    """x (B, T, d_model) -> (B, T, d_model) in x's dtype: x + attn(ln1(x)), then + ffn(ln2(.)), each
    part being the student's own (called in the worker), the sums done here."""
    return block_with(block, x, "pre-norm", causal)


def block_mistakes_of(block, x, causal: bool = True) -> dict:
    """The block's wiring mistakes, each built from the student's own parts."""
    return {d: (lambda kind=kind: block_with(block, x, kind, causal)) for d, kind in BLOCK_MISTAKES.items()}


def _blocks(model, n_layers: int):
    return [getattr(model.blocks, str(i)) for i in range(n_layers)]   # ModuleList children "0", "1", ...


def compose_gpt(model, idx, n_layers: int, *, final_norm=True, positions=True, probs=False):
    """idx (B, T) int64 -> logits (B, T, vocab) from the student's own tok_emb, pos_emb, blocks (each
    whole), ln_f and lm_head, called in the worker and chained here."""
    T = idx.shape[1]
    x = model.tok_emb(idx) + (model.pos_emb(T) if positions else 0.0)
    for block in _blocks(model, n_layers):
        x = block(x)
    logits = model.lm_head(model.ln_f(x) if final_norm else x)
    return logits.softmax(-1) if probs else logits


def gpt_mistakes_of(model, idx, n_layers: int) -> dict:
    return {d: (lambda kw=kw: compose_gpt(model, idx, n_layers, **kw)) for d, kw in GPT_FORWARD_MISTAKES.items()}


def _grad_of(part, x, g, prefix: str, grads: dict):
    """Backward through one student part; adds its parameter gradients under `prefix`; returns dx."""
    result = backward(part, x.detach().requires_grad_(True), grad_output=g)
    for name, grad in result.param_grads.items():
        key = prefix + name
        if grad is None:
            grads.setdefault(key, None)   # unused by your part: none reaches it in your model either
        else:
            grads[key] = grad if grads.get(key) is None else grads[key] + grad
    return result.input_grads[0] if result.input_grads else None


def block_grads(block, x, g, causal: bool = True):
    """x, g (B, T, d_model) -> (dx (B, T, d_model), {parameter name: gradient}) of the pre-norm block,
    chained here through backward passes of the student's own parts."""
    with torch.no_grad():
        h1 = block.ln1(x)
        x1 = x + block.attn(h1, causal=causal)
        h2 = block.ln2(x1)
    grads: dict = {}
    dh2 = _grad_of(block.ffn, h2, g, "ffn.", grads)
    dx1 = g + _grad_of(block.ln2, x1, dh2, "ln2.", grads)
    dh1 = _grad_of(block.attn, h1, dx1, "attn.", grads)
    dx = dx1 + _grad_of(block.ln1, x, dh1, "ln1.", grads)
    return dx, grads


def gpt_grads(model, idx, targets, n_layers: int, tied: bool) -> dict:
    """idx, targets (B, T) int64 -> {parameter name: gradient} of GPT's mean cross-entropy, chained
    here through backward passes of the student's own parts (d loss / d logits computed here)."""
    T = idx.shape[1]
    with torch.no_grad():
        xs = [model.tok_emb(idx) + model.pos_emb(T)]
        blocks = _blocks(model, n_layers)
        for block in blocks:
            xs.append(block(xs[-1]))
        h = model.ln_f(xs[-1])
        logits = model.lm_head(h)
    V = logits.shape[-1]
    dlogits = (logits.double().softmax(-1) - F.one_hot(targets, V).double()) / targets.numel()
    grads: dict = {}
    dx = _grad_of(model.ln_f, xs[-1], _grad_of(model.lm_head, h, dlogits.to(h.dtype), "lm_head.", grads),
                  "ln_f.", grads)
    for i in reversed(range(n_layers)):
        dx = _grad_of(blocks[i], xs[i], dx, f"blocks.{i}.", grads)
    tok = backward(model.tok_emb, idx, grad_output=dx).param_grads
    pos = backward(model.pos_emb, T, grad_output=dx.sum(0)).param_grads
    grads["tok_emb.weight"], grads["pos_emb.weight"] = tok.get("weight"), pos.get("weight")
    if tied and grads.get("tok_emb.weight") is not None:
        grads["tok_emb.weight"] = grads["tok_emb.weight"] + grads.pop("lm_head.weight")
    return grads


# ---- the comparison -----------------------------------------------------------------------

def expect_close_ecf(got, expected, *, what: str, own, notes, mistakes=None, own_mistakes=None,
                     **tol) -> None:
    """`got` must match the float64 reference's `expected`, or, when a part's own check fails
    (`notes()` lists them), the whole rebuilt from the student's own parts (`own()`)."""
    if tensor_mismatch(got, expected, **tol) is None:
        return
    found = notes()
    if found:
        because = ("\n(because " + "; ".join(found) + ", this test compares with the same computation "
                   "built from your own parts, so that mistake costs only the test that charges it)")
        try:
            rebuilt = own()
        except Exception:  # noqa: BLE001 -- parts that cannot be composed: judged as below
            rebuilt = None
        if rebuilt is not None:
            try:
                expect_close(got, rebuilt, what=what, mistakes=own_mistakes, **tol)
                return
            except CheckFailure as exc:
                raise CheckFailure(f"{exc}{because}") from None
        try:
            expect_close(got, expected, what=what, mistakes=mistakes, **tol)
        except CheckFailure as exc:
            raise CheckFailure(f"{exc}{because}") from None
    # No part differs: your parts are the reference's, so the mistakes built from them apply as well.
    expect_close(got, expected, what=what, mistakes=mistakes if mistakes is not None else own_mistakes, **tol)


def expect_grads_ecf(got: dict, expected: dict, what: str, *, notes, own, mistakes=None, module=None) -> None:
    """expect_param_grads against the reference's gradients, or, when a part's own check fails,
    against the gradients chained through the student's own parts (`own()`: {name: grad})."""
    try:
        expect_param_grads(got, expected, what, mistakes, module)
        return
    except CheckFailure as first:
        found = notes()
        if not found:
            raise
        because = ("\n(because " + "; ".join(found) + ", this test compares with the gradients chained "
                   "through your own parts, so that mistake costs only the test that charges it)")
        try:
            rebuilt = own()
        except Exception:  # noqa: BLE001 -- parts that cannot be composed: judged as below
            raise CheckFailure(f"{first}{because}") from None
        unused = {name for name, grad in rebuilt.items() if grad is None}
        rebuilt = {name: grad for name, grad in rebuilt.items() if name in expected and name not in unused}
        if isinstance(got, dict):   # a parameter your own parts leave unused gets no gradient in both
            got = {name: grad for name, grad in got.items() if not (name in unused and grad is None)}
        try:
            expect_param_grads(got, rebuilt, what)
        except CheckFailure as exc:
            raise CheckFailure(f"{exc}{because}") from None


def once(make):
    """A function computing make() on its first call only."""
    cache = []

    def value():
        if not cache:
            cache.append(make())
        return cache[0]
    return value
