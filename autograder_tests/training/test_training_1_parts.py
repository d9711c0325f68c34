"""Hidden tests of stage `training`, part 1: get_batch, lr_at, configure_optimizer.

The optimizer lives in the worker; its param_groups come back as data (the
parameters as tensors), and each tensor is matched to the fixture's named
parameters by value (TinyGPT draws every parameter, biases and norms too, from its
seed, so no two are equal).
"""

from __future__ import annotations

import math

import pytest
import torch

from grader.testing import CheckFailure, expect_close, expect_equal, expect_scalar, expect_sequence
from training_checks import batch_variants, local_model, remote_model, split
from training_upstream import group_names

# ---- get_batch ------------------------------------------------------------------

def check_batch(student, reference, data, batch_size, block_size, seed, device, what):
    gen = torch.Generator().manual_seed(seed)
    got = student.training.get_batch(data, batch_size, block_size, gen, device=device)
    expected_gen = torch.Generator().manual_seed(seed)
    expected = reference.get_batch(data, batch_size, block_size, expected_gen, device=device)
    expect_sequence(got, ("x", "y"), what=what)
    variants = batch_variants(data.cpu(), batch_size, block_size, seed)
    for i, name in enumerate(("x", "y")):
        mistakes = {d: (lambda make=make, i=i: make()[i].to(device)) for d, make in variants.items()}
        expect_close(got[i], expected[i], what=f"{what}: {name}", mistakes=mistakes)
    expect_close(gen.get_state(), expected_gen.get_state(),
                 what=f"{what}: the generator's state afterwards (draw ix with ONE call to "
                      f"torch.randint(len(data) - block_size, (batch_size,), generator=generator))")


@pytest.mark.points(2)
def test_get_batch_small(student, reference, device):
    """get_batch(data = 100..129, batch_size=4, block_size=5): x, y (4, 5) int64"""
    data = torch.arange(100, 130, dtype=torch.int64)
    check_batch(student, reference, data, 4, 5, seed=3, device=device,
                what="get_batch(torch.arange(100, 130), 4, 5, generator seeded 3)")


def test_get_batch_text(student, reference, device):
    """get_batch on character ids of Shakespeare: batch 8, block 64"""
    check_batch(student, reference, split("train")[:5000], 8, 64, seed=11, device=device,
                what="get_batch(<5000 character ids>, 8, 64, generator seeded 11)")


def test_get_batch_int64(student, reference, device):
    """get_batch returns int64 batches even when the data is stored as int32 or uint8"""
    for dtype in (torch.int32, torch.uint8):
        data = (torch.arange(50) * 7 % 81).to(dtype)
        check_batch(student, reference, data, 3, 6, seed=5, device=device,
                    what=f"get_batch(<50 ids stored as {dtype}>, 3, 6)")


# ---- lr_at ----------------------------------------------------------------------

def lr_mistakes(step, max_lr, min_lr, warmup, max_steps):
    def cosine(progress, low=min_lr):
        return low + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - low)
    decaying = warmup <= step < max_steps
    progress = (step - warmup) / max(max_steps - warmup, 1)
    return {
        "the warm-up starts from 0 (max_lr * step / warmup_steps): step 0 must already get "
        "max_lr / warmup_steps, i.e. max_lr * (step + 1) / warmup_steps":
            lambda: max_lr * step / warmup if step < warmup else None,
        "the cosine is off by one step (use (step - warmup_steps) / (max_steps - warmup_steps))":
            lambda: cosine((step - warmup + 1) / (max_steps - warmup)) if decaying else None,
        "the cosine decays to 0 instead of to min_lr":
            lambda: cosine(progress, 0.0) if decaying else (0.0 if step >= max_steps else None),
        "the decay is linear instead of a cosine":
            lambda: max_lr - progress * (max_lr - min_lr) if decaying else None,
        "the cosine runs over max_steps instead of over max_steps - warmup_steps":
            lambda: cosine((step - warmup) / max_steps) if decaying else None,
        "after max_steps the rate is not min_lr": lambda: max_lr if step >= max_steps else None,
        "the cosine goes on after max_steps (from max_steps on the rate stays at min_lr)":
            lambda: cosine((step - warmup) / max(max_steps - warmup, 1)) if step > max_steps else None,
    }


def check_lr(student, reference, step, *args):
    expected = reference.lr_at(step, *args)
    got = student.training.lr_at(step, *args)
    mistakes = {d: v for d, v in ((d, f()) for d, f in lr_mistakes(step, *args).items())
                if v is not None and not math.isclose(v, expected, rel_tol=1e-6)}
    expect_scalar(got, expected, what=f"lr_at({step}, max_lr={args[0]}, min_lr={args[1]}, "
                                      f"warmup_steps={args[2]}, max_steps={args[3]})",
                  atol=0.0, rtol=1e-6, mistakes=mistakes)


@pytest.mark.points(3)
def test_lr_schedule(student, reference):
    """lr_at: warm-up, peak, cosine decay, and min_lr after max_steps"""
    args = (6e-4, 6e-5, 10, 110)
    for step in (0, 1, 4, 9, 10, 11, 35, 60, 85, 109, 110, 111, 500):
        check_lr(student, reference, step, *args)


def test_lr_other_settings(student, reference):
    """lr_at with one warm-up step, with no warm-up, and with min_lr = max_lr"""
    for args in [(1.0, 0.1, 1, 5), (2e-3, 1e-4, 0, 40), (3e-4, 3e-4, 5, 20)]:
        for step in range(0, args[3] + 2, max(1, args[3] // 8)):
            check_lr(student, reference, step, *args)


# ---- configure_optimizer ----------------------------------------------------------

def optimizer_groups(student, device, **model_changes):
    model = remote_model(student, device, seed=4, **model_changes)
    optimizer = student.training.configure_optimizer(model, 3e-4, 0.1)
    local = local_model(device, seed=4, **model_changes)
    return optimizer, local


def check_groups(student, reference, device, what, **model_changes):
    optimizer, local = optimizer_groups(student, device, **model_changes)
    if getattr(optimizer, "type_name", "") != "AdamW":
        raise CheckFailure(f"{what}: expected a torch.optim.AdamW, got {getattr(optimizer, 'type_name', optimizer)!r}")
    groups = optimizer.param_groups
    expected = reference.configure_optimizer(local, 3e-4, 0.1).param_groups
    got_names = group_names(groups, local)
    want_names = group_names(expected, local)
    if len(groups) != 2:
        raise CheckFailure(f"{what}: expected 2 param groups (decayed, not decayed), got {len(groups)}")
    everything = sorted(n for g in want_names for n in g)
    decayed, other = sorted(want_names[0]), sorted(want_names[1])   # compared sorted, as the groups are
    mistakes = {
        "weight decay is applied to every parameter, biases and norm weights included "
        "(param_groups[0] must hold only the parameters with dim >= 2)": [everything, []],
        "the groups are swapped: param_groups[0] is the decayed one (dim >= 2)": [other, decayed],
        "the tied weight is listed twice (tok_emb.weight and lm_head.weight are one parameter): iterate "
        "model.parameters(), which yields it once": [sorted(decayed + ["tok_emb.weight"]), other],
    }
    expect_equal([sorted(g) for g in got_names], [decayed, other],
                 what=f"{what}: the parameters of param_groups[0] and [1]", mistakes=mistakes)
    expect_equal([float(g["weight_decay"]) for g in groups], [0.1, 0.0],
                 what=f"{what}: weight_decay of the two groups")


@pytest.mark.points(3)
def test_optimizer_groups(student, reference, device):
    """configure_optimizer: dim >= 2 parameters decayed, biases and norm weights not"""
    check_groups(student, reference, device, "configure_optimizer(TinyGPT, lr=3e-4, weight_decay=0.1)")


def test_optimizer_tied_once(student, reference, device):
    """configure_optimizer lists the tied embedding / lm_head weight once"""
    optimizer, local = optimizer_groups(student, device)
    names = group_names(optimizer.param_groups, local)
    count = sum(n == "tok_emb.weight" for g in names for n in g)
    expect_equal(count, 1, what="how often the tied weight (tok_emb.weight is lm_head.weight) appears", mistakes={
        "the tied weight is listed twice: iterate model.parameters() (which yields it once), "
        "not the state dict or named_parameters(remove_duplicate=False)": 2})
    total = sum(len(g) for g in names)
    expect_equal(total, len(list(local.parameters())), what="the number of parameters in the optimizer")


def test_optimizer_frozen(student, reference, device):
    """configure_optimizer leaves out parameters with requires_grad=False"""
    frozen = ["pos_emb.weight", "ln_f.bias", "blocks.1.linear1.weight"]
    check_groups(student, reference, device,
                 f"configure_optimizer(TinyGPT with {', '.join(frozen)} frozen)", freeze=frozen)


def test_optimizer_settings(student, reference, device):
    """configure_optimizer: AdamW with the given lr, betas (default (0.9, 0.95))"""
    model = remote_model(student, device, seed=2)
    for kwargs in ({}, {"betas": (0.9, 0.95)}, {"betas": (0.8, 0.99)}):
        optimizer = student.training.configure_optimizer(model, 2.5e-3, 0.05, **kwargs)
        if optimizer.type_name != "AdamW":
            raise CheckFailure(f"expected a torch.optim.AdamW, got {optimizer.type_name}")
        for i, group in enumerate(optimizer.param_groups):
            expect_scalar(group["lr"], 2.5e-3, what=f"param_groups[{i}]['lr']", atol=0, rtol=1e-9)
            expect_equal(tuple(group["betas"]), kwargs.get("betas", (0.9, 0.95)),
                         what=f"param_groups[{i}]['betas'] with configure_optimizer(..., **{kwargs})")
