"""Hidden tests of stage `transformer`: the GPT model, weight tying, the loss, and banned APIs.

The GPT here is GPT(50, 16, 32, 2, 4): 27,584 parameters, milliseconds per call.
The student's model is loaded with the weights of a reference model built from a
fixed seed and compared in eval mode with a float64 copy of that reference.
"""

import pytest
import torch
from torch.nn import functional as F

from grader.testing import (CheckFailure, backward, expect_close, expect_own_code_without_banned_apis,
                            expect_raises, expect_scalar, expect_sequence, randint, randn, reduction_atol)
from transformer_checks import (BLOCK, D_MODEL, HEADS, LAYERS, VOCAB, build_reference, expect_keys,
                                float64_copy, gpt_grad_mistakes, gpt_mistakes, key_hints, loss_mistakes,
                                own_width, plain_tensors, reference_backward, student_like, tied_names)
from transformer_parts import GPT_PARTS, compose_gpt, expect_close_ecf, expect_grads_ecf, gpt_grads, \
    gpt_mistakes_of, upstream_notes

CONFIG = (VOCAB, BLOCK, D_MODEL, LAYERS, HEADS)
NAME = f"GPT{CONFIG}"


def student_gpt(student, reference, device, seed, *args, **kwargs):
    ref = build_reference(reference, "GPT", *CONFIG, *args, seed=seed, **kwargs)
    what = NAME[:-1] + "".join(f", {k}={v}" for k, v in kwargs.items()) + ")"
    return student_like(student, ref, "GPT", *CONFIG, *args, device=device, what=what, **kwargs), ref, what


def expect_logits(got, expected, *, what, student, reference, device, model, idx, mistakes=None):
    """The logits match the float64 reference, or, when one of GPT's parts fails its own check,
    the same model rebuilt from the student's own parts (error carried forward)."""
    expect_close_ecf(got, expected, what=what, mistakes=mistakes,
                     own=lambda: compose_gpt(model, idx, LAYERS),
                     own_mistakes=gpt_mistakes_of(model, idx, LAYERS),
                     notes=lambda: upstream_notes(student, reference, device, GPT_PARTS))


def logits_of(output, what: str, loss_expected: bool = False, check_none: bool = False):
    """(logits, loss) from a GPT forward, after checking it is a pair (and, with check_none, that the
    loss is None: test_gpt_no_targets owns that rule, the other tests do not charge it again)."""
    logits, loss = expect_sequence(output, ("logits", "loss"), what=what, types=(tuple,))
    if check_none and not loss_expected and loss is not None:
        raise CheckFailure(f"{what}: the loss must be None when no targets are given")
    return logits, loss


@pytest.mark.points(2)
@pytest.mark.parametrize("tie_weights", [True, False])
def test_gpt_state_dict(student, reference, tie_weights):
    """GPT(50, 16, 32, 2, 4, tie_weights={tie_weights}) has the contract's state-dict keys and shapes"""
    expected = reference.GPT(*CONFIG, tie_weights=tie_weights).state_dict()
    model = student.transformer.GPT(*CONFIG, tie_weights=tie_weights)
    expect_keys(model.state_dict(), expected, f"{NAME[:-1]}, tie_weights={tie_weights})", model)
    # The blocks' ffn has the width of your own TransformerBlock(32, 4, 48) (charged by test_block_* and
    # test_ffn_* when d_ff is ignored there).
    width = own_width(student, "TransformerBlock", D_MODEL, HEADS, key="ffn.fc.weight", d_ff=48)
    expected = reference.GPT(*CONFIG, d_ff=width).state_dict()
    model = student.transformer.GPT(*CONFIG, d_ff=48)
    expect_keys(model.state_dict(), expected, f"{NAME[:-1]}, d_ff=48)", model)


@pytest.mark.points(2)
def test_gpt_parameters(student, reference):
    """GPT(50, 16, 32, 2, 4) has 27,584 trainable parameters: lm_head has no bias and shares tok_emb's weight"""
    model = student.transformer.GPT(*CONFIG)
    idx = randint((2, 8), high=VOCAB, seed=40, device="cpu")
    grads = backward(model, idx, idx, output_index=1).param_grads
    expected = dict(reference.GPT(*CONFIG).named_parameters())
    names = tied_names(grads)
    count = sum(expected[n].numel() for n in names if n in expected) + sum(
        g.numel() for n, g in grads.items() if n not in expected and isinstance(g, torch.Tensor))
    what = f"{NAME}'s trainable parameters (named_parameters)"
    if "lm_head.weight" in names:
        raise CheckFailure(f"{what}: looks like the weights are not tied: lm_head.weight is a parameter of its "
                           f"own ({count:,} parameters instead of 27,584); assign the Parameter itself: "
                           "self.lm_head.weight = self.tok_emb.weight")
    if "lm_head.bias" in names:
        raise CheckFailure(f"{what}: lm_head has a bias ({count:,} parameters instead of 27,584): "
                           "build it as nn.Linear(d_model, vocab_size, bias=False)")
    if names != set(expected):
        missing, extra = set(expected) - names, names - set(expected)
        # The same reasons as a state dict's missing keys: plain tensors, a plain list of blocks, ...
        hint = "; ".join(key_hints(missing, extra, plain_tensors(model, missing)) if missing else
                         ["every parameter must be used in forward"])
        raise CheckFailure(f"{what}: missing {sorted(missing)[:6]}, unexpected {sorted(extra)[:6]}\n({hint})")


@pytest.mark.points(3)
@pytest.mark.parametrize("T", [BLOCK, 7])
def test_gpt_forward(student, reference, device, T):
    """GPT(50, 16, 32, 2, 4) logits for a (2, {T}) batch, with the reference's weights"""
    model, ref, what = student_gpt(student, reference, device, seed=41)
    idx = randint((2, T), high=VOCAB, seed=42, device=device)
    ref64 = float64_copy(ref, device)
    with torch.no_grad():
        expected = ref64(idx)[0].float()
        logits, _ = logits_of(model(idx), f"{what}(idx of shape (2, {T}))")
        expect_logits(logits, expected, what=f"the logits of {what}(idx of shape (2, {T}))",
                      mistakes=gpt_mistakes(ref64, idx, torch.float32), student=student, reference=reference,
                      device=device, model=model, idx=idx)


@pytest.mark.points(3)
def test_gpt_loss(student, reference, device):
    """GPT's loss is the mean cross-entropy of its logits against the targets"""
    model, ref, what = student_gpt(student, reference, device, seed=43)
    idx = randint((3, BLOCK), high=VOCAB, seed=44, device=device)
    targets = randint((3, BLOCK), high=VOCAB, seed=45, device=device)
    logits, loss = logits_of(model(idx, targets), f"{what}(idx, targets)", loss_expected=True)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (3, BLOCK, VOCAB):
        with torch.no_grad():
            logits = float64_copy(ref, device)(idx)[0]
    # The loss of the student's OWN logits (their values are the forward tests' business).
    logits64 = logits.detach().double()
    if loss is None:
        raise CheckFailure(f"{what}(idx, targets): the loss is None; compute it when targets are given")
    if not isinstance(loss, torch.Tensor):
        raise CheckFailure(f"{what}(idx, targets): the loss is a {type(loss).__name__}; return the tensor "
                           "itself (training calls loss.backward())")
    nll = F.cross_entropy(logits64.reshape(-1, VOCAB), targets.reshape(-1), reduction="none")
    expected = nll.mean().item()
    # A mean over B * T = 48 positions in float32, any order: reduction_atol(48, 4.1) = 1.3e-5 here
    # (mean |nll| about ln 50 = 3.9), under 1e-5 + 1e-5 * 3.9 = 4.9e-5. The named mistakes move the
    # loss by far more: summed (x48), averaged over the batch only (x16), shifted targets (~0.1),
    # the log-likelihood (sign, ~8).
    atol = max(1e-5, reduction_atol(nll.numel(), nll.abs().mean().item()))
    mistakes = loss_mistakes(logits64, targets)
    try:
        expect_scalar(loss, expected, atol=atol, rtol=1e-5, what=f"the loss of {what}(idx, targets)",
                      mistakes=mistakes)
    except CheckFailure as failure:
        expect_own_cross_entropy(student, loss, logits, targets, expected, atol, failure,
                                 what=f"the loss of {what}(idx, targets)")


def expect_own_cross_entropy(student, loss, logits, targets, expected, atol, failure, *, what):
    """The contract computes the loss with the submission's own cross_entropy: when that differs
    from F.cross_entropy (charged by the cross_entropy stage), the loss must equal it instead."""
    try:
        own = student.cross_entropy.cross_entropy(logits.detach().float(), targets)
    except Exception:  # noqa: BLE001 -- no usable cross_entropy: the loss test's own failure stands
        raise failure from None
    own_value = own.item() if isinstance(own, torch.Tensor) and own.numel() == 1 else None
    if own_value is None or abs(own_value - expected) <= atol + 1e-5 * abs(expected):
        raise failure
    note = (f"\n(your cross_entropy gives {own_value:.6g} on these logits instead of {expected:.6g}, "
            "charged by the cross_entropy stage's tests; this test compares with it)")
    try:
        expect_scalar(loss, own_value, atol=atol, rtol=1e-5, what=what)
    except CheckFailure as exc:
        raise CheckFailure(f"{exc}{note}") from None


@pytest.mark.points(3)
def test_gpt_backward(student, reference, device):
    """GPT's gradients of the loss reach every parameter as in the reference (the tied weight gets both uses)"""
    model, ref, what = student_gpt(student, reference, device, seed=46)
    idx = randint((2, 12), high=VOCAB, seed=47, device=device)
    targets = randint((2, 12), high=VOCAB, seed=48, device=device)
    result = backward(model, idx, targets, output_index=1)
    ref64 = float64_copy(ref, device)
    _, _, expected = reference_backward(ref64, idx, targets, output_index=1)
    # What the tied weight would get from one of its two uses only: untie a copy of the head.
    with torch.no_grad():
        head = ref64.lm_head
        untied = torch.nn.Linear(D_MODEL, VOCAB, bias=False).double().to(device)
        untied.weight.copy_(head.weight)
        ref64.lm_head = untied
    _, _, split = reference_backward(ref64, idx, targets, output_index=1)
    ref64.lm_head = head
    # The known forward and loss mistakes, as gradients (their values are charged by test_gpt_forward
    # and test_gpt_loss too: a wrong loss has wrong gradients, and this test says which mistake).
    mistakes = gpt_grad_mistakes(ref64, idx, targets, torch.float32)
    mistakes["tok_emb.weight"] = {
        "the tied weight gets only the embedding's gradient: lm_head must use the same Parameter":
            split["tok_emb.weight"],
        "the tied weight gets only lm_head's gradient: the embedding must use the same Parameter":
            split["lm_head.weight"]} | mistakes["tok_emb.weight"]
    expect_grads_ecf(result.param_grads, expected, f"{what}(idx, targets) loss.backward()",
                     notes=lambda: upstream_notes(student, reference, device, GPT_PARTS),
                     own=lambda: gpt_grads(model, idx, targets, LAYERS, tied=True), mistakes=mistakes, module=model)


@pytest.mark.points(2)
@pytest.mark.parametrize("tie", ["omitted", "True"])
def test_gpt_tying(student, reference, device, tie):
    """Weight tying (tie_weights {tie}): loading only tok_emb.weight changes lm_head.weight and the logits too"""
    kwargs = {} if tie == "omitted" else {"tie_weights": True}
    model, ref, what = student_gpt(student, reference, device, 49, **kwargs)
    new = randn(VOCAB, D_MODEL, seed=50, scale=0.3)
    old_head = ref.lm_head.weight.detach().clone()
    model.load_state_dict({"tok_emb.weight": new}, strict=False)
    ref.load_state_dict({"tok_emb.weight": new}, strict=False)
    expect_close(model.lm_head.weight, new.to(device),
                 what=f"{what}.lm_head.weight after load_state_dict({{'tok_emb.weight': W}}, strict=False)",
                 mistakes={"the weights are not tied (the values were copied once, or not at all): lm_head.weight "
                           "must BE tok_emb.weight (self.lm_head.weight = self.tok_emb.weight)":
                           old_head.to(device)})
    idx = randint((2, 10), high=VOCAB, seed=51, device=device)
    with torch.no_grad():
        expected = float64_copy(ref, device)(idx)[0].float()
    logits, _ = logits_of(model(idx), f"{what}(idx)")
    expect_logits(logits, expected, what=f"the logits of {what} after loading a new tok_emb.weight",
                  student=student, reference=reference, device=device, model=model, idx=idx)


@pytest.mark.points(2)
def test_gpt_untied(student, reference, device):
    """GPT(..., tie_weights=False) keeps a separate lm_head.weight"""
    model, ref, what = student_gpt(student, reference, device, seed=52, tie_weights=False)
    idx = randint((2, 9), high=VOCAB, seed=53, device=device)
    targets = randint((2, 9), high=VOCAB, seed=54, device=device)
    names = set(backward(model, idx, targets, output_index=1).param_grads)
    if "lm_head.weight" not in names or "tok_emb.weight" not in names:
        raise CheckFailure(f"{what}: lm_head.weight and tok_emb.weight must be two parameters when "
                           f"tie_weights=False (looks like tie_weights is ignored); got {sorted(names)[:4]}...")
    ref64 = float64_copy(ref, device)
    with torch.no_grad():
        expected = ref64(idx)[0].float()
    logits, _ = logits_of(model(idx), f"{what}(idx)")
    expect_logits(logits, expected, what=f"the logits of {what}(idx)", student=student, reference=reference,
                  device=device, model=model, idx=idx)


def test_gpt_no_targets(student, reference, device):
    """GPT's loss is None when targets are omitted or passed as None"""
    model, ref, what = student_gpt(student, reference, device, seed=61)
    idx = randint((2, 6), high=VOCAB, seed=62, device=device)
    for call, output in ((f"{what}(idx)", model(idx)), (f"{what}(idx, None)", model(idx, None)),
                         (f"{what}(idx, targets=None)", model(idx, targets=None))):
        logits_of(output, call, check_none=True)


def test_gpt_too_long(student):
    """GPT raises ValueError for a sequence longer than block_size"""
    model = student.transformer.GPT(*CONFIG)
    with expect_raises("ValueError", what=f"{NAME}(idx of shape (1, {BLOCK + 1}))"):
        model(torch.zeros(1, BLOCK + 1, dtype=torch.int64))
    with expect_raises("ValueError", what=f"{NAME}(idx of shape (2, {BLOCK + 5}), targets)"):
        idx = torch.zeros(2, BLOCK + 5, dtype=torch.int64)
        model(idx, idx)


@pytest.mark.points(2)
def test_gpt_dropout(student, reference, device):
    """GPT(..., dropout=0.5): deterministic and equal to the reference in eval mode"""
    model, ref, what = student_gpt(student, reference, device, seed=55, dropout=0.5)
    idx = randint((2, BLOCK), high=VOCAB, seed=56, device=device)
    with torch.no_grad():
        expected = float64_copy(ref, device)(idx)[0].float()
    for attempt in ("", ", called a second time"):
        logits, _ = logits_of(model(idx), f"{what}(idx)")
        expect_logits(logits, expected, what=f"the logits of {what} in eval mode (dropout must be off){attempt}",
                      student=student, reference=reference, device=device, model=model, idx=idx)


def test_gpt_embedding_dropout(student, device):
    """GPT(50, 16, 32, 0, 4, dropout=0.5) in training mode applies dropout (to the embeddings' sum)"""
    model = student.transformer.GPT(VOCAB, BLOCK, D_MODEL, 0, HEADS, dropout=0.5)
    model.to(device)
    model.train()
    idx = randint((2, BLOCK), high=VOCAB, seed=57, device=device)
    what = f"GPT({VOCAB}, {BLOCK}, {D_MODEL}, 0, {HEADS}, dropout=0.5) in training mode (no blocks)"
    first, _ = logits_of(model(idx), what)
    second, _ = logits_of(model(idx), what)
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor) and torch.equal(first, second):
        raise CheckFailure(f"{what}: two calls gave the same logits: dropout on the sum of the token and "
                           "position embeddings is missing")


def test_gpt_float64(student, reference, device):
    """GPT after .double() computes float64 logits"""
    model, ref, what = student_gpt(student, reference, device, seed=58)
    model.double()
    idx = randint((2, 8), high=VOCAB, seed=59, device=device)
    with torch.no_grad():
        expected = float64_copy(ref, device)(idx)[0]
    logits, _ = logits_of(model(idx), f"{what}.double()(idx)")
    expect_logits(logits, expected, what=f"the logits of {what}.double()", student=student, reference=reference,
                  device=device, model=model, idx=idx)


@pytest.mark.points(2)
def test_no_banned_apis(student, reference, submission_dir):
    """transformer.py and its helper modules call none of the banned APIs"""
    x = randn(3, 16, seed=60)
    expect_own_code_without_banned_apis([lambda: student.transformer.LayerNorm(16)(x)], submission_dir,
                                        "transformer", reference.BANNED_APIS, "LayerNorm")
