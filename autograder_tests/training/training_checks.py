"""Helpers shared by the hidden tests of stage `training`.

The model trained is never the student's GPT: it is the grader's fixture TinyGPT
(assignments/tests/fixtures_training.py), built in the worker for the submission and here for the
reference. What the submission's training did is read back as data (the weights, the
gradients the optimizer saw, the reported losses) and compared here.

`variant_train` is a small training loop with one thing changed at a time: what a
known mistake would produce, so that the feedback can name it.
"""

from __future__ import annotations

import contextlib
import functools
import math
from pathlib import Path

import torch

from grader.testing import CheckFailure, build_fixture, project_root
from training_upstream import REFERENCE, Parts, build_optimizer

HERE = Path(__file__).parent

# The small model of the exact tests, and a config that exercises every part of the loop.
SMALL = dict(vocab_size=81, block_size=16, d_model=32, n_layers=2, n_heads=4)
EXACT_CONFIG = dict(batch_size=4, block_size=16, max_steps=6, grad_accum_steps=1, max_lr=1e-2,
                    min_lr=1e-3, warmup_steps=2, weight_decay=0.5, grad_clip=1.0, eval_interval=3,
                    eval_steps=2, seed=7)


# ---- data ----------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def vocab() -> dict[str, int]:
    """The character vocabulary of the students' datasets/shakespeare.txt (81 characters)."""
    text = (project_root() / "datasets" / "shakespeare.txt").read_text(encoding="utf-8")
    return {ch: i for i, ch in enumerate(sorted(set(text)))}


def encode(text: str) -> torch.Tensor:
    """Character ids (int64); a character outside the vocabulary becomes the id of " "."""
    stoi = vocab()
    unknown = stoi[" "]
    return torch.tensor([stoi.get(ch, unknown) for ch in text], dtype=torch.int64)


@functools.lru_cache(maxsize=2)
def split(name: str) -> torch.Tensor:
    """The hidden split `name` ("train" or "val") as character ids."""
    return encode((HERE / "data" / f"shakespeare_{name}.txt").read_text(encoding="utf-8"))


def batch_variants(data, batch_size, block_size, seed):
    """What known get_batch mistakes return for these inputs: {description: () -> (x, y) on the CPU}
    (the get_batch tests name them; the budgeted run names them as the parts it used)."""
    def windows(high, shift=1, swap=False, same=False):
        def make():
            ix = torch.randint(high, (batch_size,), generator=torch.Generator().manual_seed(seed))
            x = torch.stack([data[i:i + block_size] for i in ix]).long()
            y = torch.stack([data[i + shift:i + shift + block_size] for i in ix]).long()
            return (x, x) if same else (y, x) if swap else (x, y)
        return make
    n = len(data) - block_size
    return {
        "y = x: the targets must be the inputs shifted one position left "
        "(y[b] = data[ix[b] + 1 : ix[b] + block_size + 1])": windows(n, same=True),
        "x and y are swapped": windows(n, swap=True),
        "the targets are shifted by 2 positions instead of 1": windows(n, 2),
        "ix is drawn from torch.randint(len(data) - block_size - 1, ...): use len(data) - block_size":
            windows(n - 1),
        "ix is drawn from torch.randint(len(data), ...): use len(data) - block_size": windows(len(data)),
    }


# ---- models ----------------------------------------------------------------------

def config_for(device: str, **changes) -> dict:
    """EXACT_CONFIG on `device` in float32 (on CUDA the exact tests turn autocast off)."""
    config = dict(EXACT_CONFIG, device=device, **changes)
    if device != "cpu":
        config.setdefault("dtype", "float32")
    return config


def local_model(device: str, seed: int = 0, **changes):
    return build_fixture("TinyGPT", [], dict(SMALL, seed=seed, device=device, **changes))


def remote_model(student, device: str, seed: int = 0, **changes):
    return student.fixture("TinyGPT", device=device, **dict(SMALL, seed=seed, **changes))


def reference_run(reference, device: str, config: dict, seed: int = 0, record_steps: int = 0):
    """The reference train() on a local TinyGPT: (result dict, model)."""
    model = local_model(device, seed, record_steps=record_steps)
    train_data, val_data = split("train")[:20000], split("val")[:5000]
    result = reference.train(model, train_data, val_data, reference.TrainConfig(**config))
    return result, model


def flat(state: dict) -> torch.Tensor:
    """Every tensor of a state dict (or a {name: grad} dict) as one float64 vector, by name."""
    return torch.cat([state[k].detach().double().cpu().flatten() for k in sorted(state)
                      if state[k] is not None and k != "lm_head.weight"])


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def expect_rel_close(actual: torch.Tensor, expected: torch.Tensor, *, what: str, rtol: float,
                     mistakes: dict | None = None, unit: str = "") -> None:
    """Fail unless ||actual - expected|| <= rtol * ||expected||, naming a matching mistake."""
    if actual.shape != expected.shape:
        raise CheckFailure(f"{what}: expected {expected.numel()} numbers, got {actual.numel()}")
    error = relative_error(actual, expected)
    if error <= rtol:
        return
    problem = f"they differ from the reference's by {100 * error:.3g}% (allowed {100 * rtol:g}%){unit}"
    for description, produce in (mistakes or {}).items():
        try:
            buggy = produce() if callable(produce) else produce
        except Exception:  # noqa: BLE001 -- a mistake that does not apply here
            continue
        if buggy is not None and buggy.shape == actual.shape and relative_error(actual, buggy) <= rtol:
            raise CheckFailure(f"{what}: looks like {description}\n({problem})")
    raise CheckFailure(f"{what}: {problem}")


def unclipped(grads: dict, grad_clip: float) -> str:
    """Which clipping the gradients an optimizer step saw ({name: grad}) had, when their global
    norm is above grad_clip: per parameter (the largest parameter norm is grad_clip, as
    clip_grad_norm_ on one parameter leaves it), by value (the largest |value| is grad_clip),
    or none."""
    grads = {n: g.double() for n, g in grads.items() if g is not None and n != "lm_head.weight"}
    if not grads:
        return "the gradients are not clipped before optimizer.step() (clip between backward and step)"
    if 0.99 * grad_clip <= max(g.norm().item() for g in grads.values()) <= 1.001 * grad_clip:
        return ("each parameter's gradient is clipped on its own (each parameter's norm is at most "
                "grad_clip); clip the GLOBAL norm over all parameters: "
                "torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)")
    if 0.99 * grad_clip <= max(g.abs().max().item() for g in grads.values()) <= 1.001 * grad_clip:
        return "the gradients are clipped by value (clip_grad_value_), not by their global norm"
    return "the gradients are not clipped before optimizer.step() (clip between backward and step)"


# ---- a training loop with one mistake at a time ------------------------------------

def variant_lr(step: int, c: dict, warmup_from_zero=False, cosine_off_by_one=False) -> float:
    if step < c["warmup_steps"]:
        return c["max_lr"] * (step if warmup_from_zero else step + 1) / c["warmup_steps"]
    if step >= c["max_steps"]:
        return c["min_lr"]
    progress = (step - c["warmup_steps"] + int(cosine_off_by_one)) / (c["max_steps"] - c["warmup_steps"])
    return c["min_lr"] + 0.5 * (1 + math.cos(math.pi * progress)) * (c["max_lr"] - c["min_lr"])


def variant_train(reference, device: str, config: dict, *, parts: Parts = REFERENCE, seed: int = 0,
                  record_steps: int = 0, divide=True, clip="global", decay_all=False, warmup_from_zero=False,
                  cosine_off_by_one=False, seed_once=False, zero_grad_each_micro=False, autocast_bf16=False,
                  resume_at: int | None = None, resume_optimizer=True, resume_step=True):
    """Train a local TinyGPT as the reference does, with the student's upstream `parts` (its
    lr_at's rates, get_batch's batches, configure_optimizer's groups; training_upstream.py)
    and one knob changed as a buggy submission would; returns (train losses, model).

    clip: "global" | "none" | "after_step" | "per_param" | "value".
    resume_at: stop there and continue in a fresh model/optimizer, as a resumed job would,
    restoring the optimizer state only if resume_optimizer and the step only if resume_step
    (when not, the resumed call starts from step 0 and runs max_steps steps).
    """
    c = dict(EXACT_CONFIG, **{k: v for k, v in config.items() if k in EXACT_CONFIG})
    train_data = split("train")[:20000]
    model = local_model(device, seed, record_steps=record_steps)
    model.train()

    def make_optimizer(m):
        if decay_all:
            return torch.optim.AdamW(m.parameters(), lr=c["max_lr"], weight_decay=c["weight_decay"],
                                     betas=(0.9, 0.95))
        if parts.groups is not None:
            return build_optimizer(m, parts.groups, c["max_lr"])
        return reference.configure_optimizer(m, c["max_lr"], c["weight_decay"])

    optimizer = make_optimizer(model)
    losses, k = [], c["grad_accum_steps"]
    once = torch.Generator().manual_seed(c["seed"])
    step, schedule_step, resumed = 0, 0, False
    while step < c["max_steps"]:
        if resume_at is not None and step == resume_at and not resumed:
            resumed = True
            fresh = local_model(device, seed + 1, record_steps=record_steps)
            fresh.load_state_dict(model.state_dict())
            fresh.train()
            new_optimizer = make_optimizer(fresh)
            if resume_optimizer:
                new_optimizer.load_state_dict(optimizer.state_dict())
            model, optimizer = fresh, new_optimizer
            if not resume_step:          # the resumed call counts from 0 and runs max_steps more
                step = schedule_step = 0
            once = torch.Generator().manual_seed(c["seed"])
        if parts.lrs is not None and not (warmup_from_zero or cosine_off_by_one):
            lr = parts.lrs[schedule_step]
        else:
            lr = variant_lr(schedule_step, c, warmup_from_zero, cosine_off_by_one)
        for group in optimizer.param_groups:
            group["lr"] = lr
        gen = once if seed_once else torch.Generator().manual_seed(c["seed"] + schedule_step)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(k):
            if zero_grad_each_micro:
                optimizer.zero_grad(set_to_none=True)
            if parts.batches is not None and not seed_once:
                x, y = (t.to(device) for t in parts.batches[schedule_step][micro])
            else:
                x, y = reference.get_batch(train_data, c["batch_size"], c["block_size"], gen, device)
            with (torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if autocast_bf16
                  else contextlib.nullcontext()):
                _, loss = model(x, y)
            (loss / k if divide else loss).backward()
            total += loss.item()
        params = [p for p in model.parameters() if p.requires_grad]
        if clip == "global":
            torch.nn.utils.clip_grad_norm_(params, c["grad_clip"])
        elif clip == "per_param":
            for p in params:
                torch.nn.utils.clip_grad_norm_([p], c["grad_clip"])
        elif clip == "value":
            torch.nn.utils.clip_grad_value_(params, c["grad_clip"])
        optimizer.step()
        if clip == "after_step":
            torch.nn.utils.clip_grad_norm_(params, c["grad_clip"])
        losses.append(total / k)
        step += 1
        schedule_step += 1
    return losses, model
