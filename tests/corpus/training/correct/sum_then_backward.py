"""STYLE: losses summed over the micro-batches and backpropagated once (divided by k),
manual global-norm clipping, get_batch by a Python loop, a hand-written cosine,
named_parameters for the groups, torch.inference_mode for evaluation, pickled
checkpoints under other keys.
"""

import math
import os
import time
from dataclasses import dataclass

import torch


def get_batch(data, batch_size, block_size, generator, device="cpu"):
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator).tolist()
    xs, ys = [], []
    for s in starts:
        xs.append(data[s:s + block_size].long())
        ys.append(data[s + 1:s + 1 + block_size].long())
    return torch.stack(xs).to(device), torch.stack(ys).to(device)


def lr_at(step, max_lr, min_lr, warmup_steps, max_steps):
    if step >= max_steps:
        return min_lr
    if step < warmup_steps:
        return (step + 1) * max_lr / warmup_steps
    angle = math.pi * (step - warmup_steps) / (max_steps - warmup_steps)
    weight = (math.cos(angle) + 1) / 2          # 1 at the peak, 0 at max_steps
    return weight * max_lr + (1 - weight) * min_lr


def configure_optimizer(model, lr, weight_decay, betas=(0.9, 0.95)):
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    matrices = [p for p in params.values() if p.ndim > 1]
    vectors = [p for p in params.values() if p.ndim <= 1]
    return torch.optim.AdamW([dict(params=matrices, weight_decay=weight_decay),
                              dict(params=vectors, weight_decay=0.0)], lr=lr, betas=betas)


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


def estimate_loss(model, data, config, generator):
    mode = model.training
    model.eval()
    device = next(model.parameters()).device
    losses = torch.zeros(config.eval_steps)
    with torch.inference_mode():
        for i in range(config.eval_steps):
            x, y = get_batch(data, config.batch_size, config.block_size, generator, device)
            losses[i] = model(x, y)[1].float().cpu()
    model.train(mode)
    return losses.mean().item()


def save_checkpoint(path, model, optimizer, step):
    torch.save({"weights": model.state_dict(), "adam": optimizer.state_dict(), "done": step}, path)


def load_checkpoint(path, model, optimizer=None):
    blob = torch.load(path, map_location=next(model.parameters()).device)
    model.load_state_dict(blob["weights"])
    if optimizer is not None:
        optimizer.load_state_dict(blob["adam"])
    return blob["done"]


def clip_global_norm(params, max_norm):
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
    scale = max_norm / (total + 1e-6)
    if scale < 1:
        for g in grads:
            g.mul_(scale)


def train(model, train_data, val_data, config):
    if config.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = config.device
    model.to(device)
    use_bf16 = (str(device).startswith("cuda") and config.dtype in ("auto", "bfloat16")
                and torch.cuda.is_bf16_supported())
    opt = configure_optimizer(model, config.max_lr, config.weight_decay)
    done = 0
    if config.checkpoint_path and os.path.exists(config.checkpoint_path):
        done = load_checkpoint(config.checkpoint_path, model, opt)
    end = config.max_steps if config.stop_after is None else min(config.max_steps, done + config.stop_after)
    report = {"steps": done, "train_loss": [], "val_loss": [], "tokens_per_sec": 0.0}
    seen, t0 = 0, time.time()
    model.train()
    for step in range(done, end):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, config.max_lr, config.min_lr, config.warmup_steps, config.max_steps)
        gen = torch.Generator()
        gen.manual_seed(config.seed + step)
        losses = []
        for _ in range(config.grad_accum_steps):
            x, y = get_batch(train_data, config.batch_size, config.block_size, gen, device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                losses.append(model(x, y)[1])
            seen += x.numel()
        opt.zero_grad()
        (sum(losses) / len(losses)).backward()
        if config.grad_clip:
            clip_global_norm([p for p in model.parameters()], config.grad_clip)
        opt.step()
        report["train_loss"].append(float(sum(l.item() for l in losses) / len(losses)))
        report["steps"] = step + 1
        if (step + 1) % config.eval_interval == 0:
            report["val_loss"].append(estimate_loss(model, val_data, config, torch.Generator().manual_seed(step)))
            if config.checkpoint_path:
                save_checkpoint(config.checkpoint_path, model, opt, step + 1)
    if config.checkpoint_path:
        save_checkpoint(config.checkpoint_path, model, opt, report["steps"])
    report["tokens_per_sec"] = seen / max(time.time() - t0, 1e-9)
    return report
