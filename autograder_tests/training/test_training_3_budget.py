"""Hidden tests of stage `training`, part 3: a budgeted training run, graded by what was learned.

The submission's `train` trains the grader's TinyGPT for a fixed number of steps on
the hidden training plays (character level). The grader then reads the weights
back, loads them into its own TinyGPT and measures the loss on the hidden validation
play itself, over every non-overlapping window: the numbers `train` reports are
never used. Points scale linearly from FLOOR (about what a model that only learned
character frequencies reaches; an untrained one is at ln 81 = 4.39) to the target
(slightly above what the reference reaches with the same budget).

CPU: measured with the reference on the 2-core grading machine. CUDA (bf16 autocast,
a larger config): the target is the reference's own result, measured here at test
time, plus the same margin.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from grader.testing import CheckFailure, StudentCodeError, build_fixture
from training_checks import batch_variants, split
from training_upstream import BATCH_TEST, GROUPS_TEST, LR_TEST, Parts, read_groups

FLOOR = 3.0
MARGIN = 0.05

BUDGETS = {
    "cpu": dict(model=dict(vocab_size=81, block_size=32, d_model=64, n_layers=2, n_heads=4, seed=0),
                config=dict(batch_size=16, block_size=32, max_steps=400, max_lr=6e-3, min_lr=6e-4,
                            warmup_steps=40, weight_decay=0.1, grad_clip=1.0, eval_interval=100,
                            eval_steps=10, seed=1337),
                reference_loss=2.3588),   # the reference, measured on CPU (deterministic)
    "cuda": dict(model=dict(vocab_size=81, block_size=128, d_model=192, n_layers=4, n_heads=6, seed=0),
                 config=dict(batch_size=32, block_size=128, max_steps=1000, max_lr=3e-3, min_lr=3e-4,
                             warmup_steps=100, weight_decay=0.1, grad_clip=1.0, eval_interval=250,
                             eval_steps=10, seed=1337),
                 reference_loss=None),
}


@torch.no_grad()
def validation_loss(state: dict, model_kwargs: dict, device: str) -> float:
    """The grader's own measurement: mean next-character loss over every full window of the
    hidden validation play, float32, in eval mode."""
    model = build_fixture("TinyGPT", [], dict(model_kwargs, device=device))
    model.load_state_dict({k: v.to(device=device, dtype=torch.float32) for k, v in state.items()})
    val = split("val")
    block = model_kwargs["block_size"]
    n = (len(val) - 1) // block
    x = val[:n * block].view(n, block)
    y = val[1:n * block + 1].view(n, block)
    total = 0.0
    for i in range(0, n, 256):
        _, loss = model(x[i:i + 256].to(device), y[i:i + 256].to(device))
        total += loss.item() * len(x[i:i + 256])
    return total / n


_reference_cache: dict[str, float] = {}


def reference_loss(reference, device: str) -> float:
    budget = BUDGETS["cuda" if device != "cpu" else "cpu"]
    if budget["reference_loss"] is not None:
        return budget["reference_loss"]
    if device not in _reference_cache:
        model = build_fixture("TinyGPT", [], dict(budget["model"], device=device))
        reference.train(model, split("train"), split("val"), reference.TrainConfig(device=device, **budget["config"]))
        _reference_cache[device] = validation_loss(model.state_dict(), budget["model"], device)
    return _reference_cache[device]


@pytest.mark.points(12)
@pytest.mark.call_timeout(240)
def test_budgeted_run(student, reference, device, credit, leaderboard):
    """a budgeted training run: the validation loss the grader measures on held-out plays"""
    budget = BUDGETS["cuda" if device != "cpu" else "cpu"]
    model = student.fixture("TinyGPT", device=device, **budget["model"])
    config = student.training.TrainConfig(device=device, **budget["config"])
    start = time.perf_counter()
    history = student.training.train(model, split("train"), split("val"), config)
    seconds = time.perf_counter() - start
    state = model.state_dict()
    loss = validation_loss(state, budget["model"], device)
    target = reference_loss(reference, device) + MARGIN
    c = budget["config"]
    tokens_per_sec = c["max_steps"] * c["batch_size"] * c["block_size"] / seconds
    leaderboard.append({"name": f"validation loss ({device})", "value": round(loss, 4), "order": "asc"})
    leaderboard.append({"name": f"training tokens/s ({device})", "value": round(tokens_per_sec), "order": "desc"})
    summary = (f"validation loss measured by the grader on held-out plays: {loss:.4f} "
               f"(full marks at {target:.2f} or below, none at {FLOOR:.2f} or above; "
               f"an untrained model is at 4.39); {tokens_per_sec:,.0f} training tokens/s")
    if not loss == loss:   # NaN
        raise CheckFailure(f"the trained weights give a NaN validation loss: training diverged ({summary})"
                           + upstream_notes(student, reference, device, budget))
    credit.fraction = min(1.0, max(0.0, (FLOOR - loss) / (FLOOR - target)))
    credit.message = summary + reported_curve(history)
    if credit.fraction < 1.0:
        credit.message += upstream_notes(student, reference, device, budget)


def upstream_notes(student, reference, device: str, budget: dict) -> str:
    """The parts of the student's that this run used and that differ from the contract, each
    with the test that charges it (read back as data, as the loop tests do): a loss alone does
    not say why it is high. "" when get_batch, lr_at and configure_optimizer all agree."""
    c, notes = budget["config"], []
    data = split("train")[:5000]
    try:   # one batch, drawn as train's first step draws it
        got = student.training.get_batch(data, 8, 16, torch.Generator().manual_seed(c["seed"]), device)
        want = reference.get_batch(data, 8, 16, torch.Generator().manual_seed(c["seed"]), device)
        if not same_batch(got, want):
            named = [d for d, make in batch_variants(data, 8, 16, c["seed"]).items() if same_batch(got, make())]
            notes.append((f"your get_batch looks like it has this mistake: {named[0]}" if named else
                          "your get_batch draws other batches than the contract's") + f"; charged by '{BATCH_TEST}'")
    except StudentCodeError as exc:
        notes.append(f"your get_batch fails ({str(exc).splitlines()[0]}); charged by '{BATCH_TEST}'")
    args = (c["max_lr"], c["min_lr"], c["warmup_steps"], c["max_steps"])
    for step in (0, c["warmup_steps"], c["max_steps"] // 2, c["max_steps"] - 1):
        want_lr = reference.lr_at(step, *args)
        try:
            got_lr = float(student.training.lr_at(step, *args))
        except (StudentCodeError, TypeError, ValueError):
            got_lr = None
        if got_lr is None or not math.isclose(got_lr, want_lr, rel_tol=1e-6):
            notes.append(f"your lr_at({step}, ...) gives {got_lr!r:.12}, the contract {want_lr:.6g}; charged by "
                         f"'{LR_TEST}'")
            break
    parts = Parts()
    read_groups(student, reference, device, c, budget["model"], parts)
    kind = parts.groups[0]["type"] if parts.groups else "AdamW"
    if kind != "AdamW":
        notes.append(f"your configure_optimizer returns a torch.optim.{kind}, not an AdamW: its weight decay "
                     f"is an L2 term added to the gradient (and rescaled by Adam) instead of a decay of the "
                     f"weights themselves; charged by '{GROUPS_TEST}'")
    elif parts.groups or parts.notes:
        notes.append(f"your configure_optimizer's optimizer or param groups differ from the contract's; "
                     f"charged by '{GROUPS_TEST}'")
    if not notes:
        return ""
    return ("\nParts of yours this run used that differ from the contract (each charged by its own test; "
            "they may explain the loss here):\n" + "\n".join(f"- {note}" for note in notes))


def same_batch(got, want) -> bool:
    return (isinstance(got, (tuple, list)) and len(got) == 2
            and all(isinstance(a, torch.Tensor) and a.shape == b.shape and torch.equal(a.cpu().long(), b.cpu())
                    for a, b in zip(got, want)))


def reported_curve(history) -> str:
    """The student's own train_loss, for the feedback page's plot only (never for the grade)."""
    losses = history.get("train_loss") if isinstance(history, dict) else None
    if not isinstance(losses, list) or not losses:
        return ""
    values = [float(x) for x in losses if isinstance(x, (int, float)) and not isinstance(x, bool)]
    if len(values) != len(losses):
        return ""
    stride = max(1, len(values) // 50)
    return ("\ntrain_loss (as reported by your train(), not graded): ["
            + ", ".join(f"{v:.3f}" for v in values[::stride]) + "]")
