"""STYLE: backward per micro-batch on loss / k, torch.nn.utils.clip_grad_norm_,
get_batch with unfold, a LambdaLR-free schedule set by hand each step, parameters
split by a set of ids, float64 schedule arithmetic, estimate_loss decorated with
torch.no_grad(), checkpoints written with a temporary file.
"""

import math
import os
import time
from dataclasses import dataclass

import torch
from torch import nn


def get_batch(data, batch_size, block_size, generator, device="cpu"):
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    windows = data.long().unfold(0, block_size + 1, 1)[ix.to(data.device)]   # (B, T + 1)
    return windows[:, :block_size].to(device), windows[:, 1:].to(device)


def lr_at(step, max_lr, min_lr, warmup_steps, max_steps):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step > max_steps - 1:
        return min_lr
    ratio = (step - warmup_steps) / (max_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(ratio * math.pi))


def configure_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95)):
    seen, decay, rest = set(), [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            (decay if p.dim() >= 2 else rest).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=betas)


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
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    seed: int = 1337
    checkpoint_path: str | None = None
    stop_after: int | None = None


@torch.no_grad()
def estimate_loss(model, data, config, generator):
    before = model.training
    model.eval()
    device = next(model.parameters()).device
    values = []
    for _ in range(config.eval_steps):
        x, y = get_batch(data, config.batch_size, config.block_size, generator, device=device)
        _, loss = model(x, y)
        values.append(loss.double())
    if before:
        model.train()
    return torch.stack(values).mean().item()


def save_checkpoint(path, model, optimizer, step):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(), "step": int(step)}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, model, optimizer=None):
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    model.load_state_dict(ckpt["model"])
    if optimizer:
        optimizer.load_state_dict(ckpt["optim"])
    return ckpt["step"]


def train(model, train_data, val_data, config):
    device = torch.device(config.device if config.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device)
    optimizer = configure_optimizer(model, config.max_lr, config.weight_decay)
    step = 0
    if config.checkpoint_path is not None and os.path.isfile(config.checkpoint_path):
        step = load_checkpoint(config.checkpoint_path, model, optimizer)
    amp = device.type == "cuda" and config.dtype != "float32" and torch.cuda.is_bf16_supported()
    budget = config.stop_after if config.stop_after is not None else float("inf")
    history = {"train_loss": [], "val_loss": []}
    tokens, clock = 0, time.perf_counter()
    ran = 0
    while step < config.max_steps and ran < budget:
        model.train()
        lr = lr_at(step, config.max_lr, config.min_lr, config.warmup_steps, config.max_steps)
        for g in optimizer.param_groups:
            g["lr"] = lr
        rng = torch.Generator().manual_seed(config.seed + step)
        optimizer.zero_grad(set_to_none=True)
        mean_loss = 0.0
        for micro in range(config.grad_accum_steps):
            xb, yb = get_batch(train_data, config.batch_size, config.block_size, rng, device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                _, loss = model(xb, yb)
            loss = loss / config.grad_accum_steps
            loss.backward()
            mean_loss += loss.item()
            tokens += xb.numel()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        ran += 1
        history["train_loss"].append(mean_loss)
        if step % config.eval_interval == 0:
            history["val_loss"].append(estimate_loss(model, val_data, config, torch.Generator().manual_seed(10**6 + step)))
            if config.checkpoint_path:
                save_checkpoint(config.checkpoint_path, model, optimizer, step)
    if config.checkpoint_path:
        save_checkpoint(config.checkpoint_path, model, optimizer, step)
    return {"steps": step, "train_loss": history["train_loss"], "val_loss": history["val_loss"],
            "tokens_per_sec": tokens / (time.perf_counter() - clock)}
