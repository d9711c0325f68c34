"""BUG: configure_optimizer puts every parameter, biases and norm weights too, in the decayed group
EXPECT: weight decay is applied to every parameter
PART: test_optimizer_*

The reference training.py with exactly this one mistake (corpus for the autograder).
"""

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn


def get_batch(data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator,
              device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of `batch_size` windows of `data` (1-D token ids) and their next tokens.

        ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
        x[b] = data[ix[b] : ix[b] + block_size]; y[b] = data[ix[b] + 1 : ix[b] + block_size + 1]

    Returns (x, y), each (batch_size, block_size) int64 on `device`.
    """
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    windows = ix[:, None] + torch.arange(block_size + 1)        # (B, T + 1) positions
    chunk = data[windows.to(data.device)].to(torch.int64)
    return chunk[:, :-1].to(device), chunk[:, 1:].to(device)


def lr_at(step: int, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warm-up to max_lr over
    `warmup_steps` steps (step 0 already gets max_lr / warmup_steps), then a cosine decay
    that reaches min_lr at `max_steps`, then min_lr."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def configure_optimizer(model: nn.Module, lr: float, weight_decay: float,
                        betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of `model`, in two groups:
    param_groups[0] = those with dim >= 2 (matrices, embeddings), with `weight_decay`;
    param_groups[1] = the others (biases, norm weights), with weight decay 0.
    A tied weight is one parameter and appears once; frozen ones (requires_grad=False) not at all."""
    decay, no_decay = [], []
    for p in model.parameters():             # parameters() yields a tied weight once
        if p.requires_grad:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


@dataclass
class TrainConfig:
    batch_size: int = 32
    block_size: int = 64
    max_steps: int = 1000
    grad_accum_steps: int = 1
    max_lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 100
    eval_steps: int = 20
    device: str = "auto"      # "auto" = cuda when available, else cpu; or "cpu", "cuda", "cuda:1"...
    dtype: str = "auto"       # "auto" = bf16 autocast on CUDA when supported, float32 on CPU;
                              # or "float32", "bfloat16"
    compile: bool = False
    seed: int = 1337
    checkpoint_path: str | None = None
    stop_after: int | None = None   # stop (saving a checkpoint) after this many steps in this call


def resolve_device(name: str) -> torch.device:
    """config.device as a torch.device ("auto": cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_context(device: torch.device, dtype: str):
    """A context manager for the forward passes: bf16 autocast on CUDA for "auto" (when the
    GPU supports bf16) and "bfloat16"; nothing (float32) otherwise."""
    if device.type != "cuda" or dtype == "float32":
        return nullcontext()
    if dtype == "bfloat16" or (dtype == "auto" and torch.cuda.is_bf16_supported()):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def estimate_loss(model: nn.Module, data: torch.Tensor, config: TrainConfig,
                  generator: torch.Generator) -> float:
    """The mean loss of `model` over config.eval_steps batches of `data` drawn with
    get_batch(data, config.batch_size, config.block_size, generator, <the model's device>),
    in eval mode and without gradients; the model's previous mode is restored."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    total = 0.0
    try:
        with torch.no_grad():
            for _ in range(config.eval_steps):
                x, y = get_batch(data, config.batch_size, config.block_size, generator, device)
                with autocast_context(device, config.dtype):
                    _, loss = model(x, y)
                total += loss.item()
    finally:
        model.train(was_training)
    return total / config.eval_steps


def save_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Save the model's and the optimizer's state and `step` (optimizer steps completed) to `path`."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
    partial = f"{path}.partial"
    torch.save(state, partial)
    os.replace(partial, path)        # a job killed mid-save never leaves a broken checkpoint


def load_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Restore the model's (and, when given, the optimizer's) state from `path`; return the
    number of optimizer steps completed when it was saved."""
    device = next(model.parameters()).device
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def train(model: nn.Module, train_data: torch.Tensor, val_data: torch.Tensor, config: TrainConfig) -> dict:
    """Train `model` in place on `train_data` (1-D token ids) and return
    {"steps": optimizer steps completed (resumed ones included),
     "train_loss": [mean micro-batch loss of each step run in this call],
     "val_loss": [estimate_loss on val_data every eval_interval steps and at the end],
     "tokens_per_sec": training tokens per second of this call}.

    Step s uses lr_at(s, ...) and draws its grad_accum_steps micro-batches with get_batch and
    torch.Generator().manual_seed(config.seed + s); each micro-batch loss is divided by
    grad_accum_steps before backward; the global gradient norm is clipped to grad_clip
    (0 turns clipping off) before optimizer.step(). With config.checkpoint_path: resume from it
    when the file exists; save every eval_interval steps, after stop_after steps, and at the end.
    """
    device = resolve_device(config.device)
    model.to(device)
    optimizer = configure_optimizer(model, config.max_lr, config.weight_decay)
    step = 0
    path = config.checkpoint_path
    if path and os.path.exists(path):
        step = load_checkpoint(path, model, optimizer)
    forward = torch.compile(model) if config.compile else model
    last = config.max_steps if config.stop_after is None else min(config.max_steps, step + config.stop_after)
    k = config.grad_accum_steps
    train_losses, val_losses, tokens = [], [], 0
    model.train()
    start = time.perf_counter()
    while step < last:
        lr = lr_at(step, config.max_lr, config.min_lr, config.warmup_steps, config.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(config.seed + step)
        optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=device)
        for _ in range(k):
            x, y = get_batch(train_data, config.batch_size, config.block_size, generator, device)
            with autocast_context(device, config.dtype):
                _, loss = forward(x, y)
            (loss / k).backward()
            step_loss += loss.detach().float()
            tokens += x.numel()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        train_losses.append(step_loss.item() / k)
        if config.eval_interval > 0 and (step % config.eval_interval == 0 or step == config.max_steps):
            eval_generator = torch.Generator().manual_seed(config.seed - 1 - step)
            val_losses.append(estimate_loss(model, val_data, config, eval_generator))
            if path and step % config.eval_interval == 0:
                save_checkpoint(path, model, optimizer, step)
    elapsed = time.perf_counter() - start
    if path:
        save_checkpoint(path, model, optimizer, step)
    return {"steps": step, "train_loss": train_losses, "val_loss": val_losses,
            "tokens_per_sec": tokens / elapsed if elapsed > 0 else 0.0}
