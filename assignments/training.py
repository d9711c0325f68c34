# Your file for this stage: replace each NotImplementedError with your code.
"""Stage 8 — the training loop: batches, AdamW, a learning-rate schedule, accumulation,
clipping, mixed precision and checkpoints.

Everything here works with any model whose forward is `model(idx, targets)` ->
`(logits, loss)`: your GPT from stage 6, or the grader's own small model, which is
what the hidden tests train. The grader then evaluates the weights your `train`
left in the model, on text you have never seen. See assignments/handouts/08-training.md.
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
    # TODO: your code here
    raise NotImplementedError


def lr_at(step: int, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warm-up to max_lr over
    `warmup_steps` steps (step 0 already gets max_lr / warmup_steps), then a cosine decay
    that reaches min_lr at `max_steps`, then min_lr."""
    # TODO: your code here
    raise NotImplementedError


def configure_optimizer(model: nn.Module, lr: float, weight_decay: float,
                        betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of `model`, in two groups:
    param_groups[0] = those with dim >= 2 (matrices, embeddings), with `weight_decay`;
    param_groups[1] = the others (biases, norm weights), with weight decay 0.
    A tied weight is one parameter and appears once; frozen ones (requires_grad=False) not at all."""
    # TODO: your code here
    raise NotImplementedError


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

    def __post_init__(self):
        """Reject settings the loop cannot run: ValueError for a dtype other than "auto",
        "float32" or "bfloat16", and for batch_size, block_size, grad_accum_steps or
        eval_steps below 1."""
        # TODO: your code here
        raise NotImplementedError


def resolve_device(name: str) -> torch.device:
    """config.device as a torch.device ("auto": cuda when available)."""
    # TODO: your code here
    raise NotImplementedError


def autocast_context(device: torch.device, dtype: str):
    """A context manager for the forward passes: bf16 autocast on CUDA for "auto" (when the
    GPU supports bf16) and "bfloat16"; nothing (float32) otherwise."""
    # TODO: your code here
    raise NotImplementedError


def estimate_loss(model: nn.Module, data: torch.Tensor, config: TrainConfig,
                  generator: torch.Generator) -> float:
    """The mean loss of `model` over config.eval_steps batches of `data` drawn with
    get_batch(data, config.batch_size, config.block_size, generator, <the model's device>),
    in eval mode and without gradients; the model's previous mode is restored."""
    # TODO: your code here
    raise NotImplementedError


def save_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Save the model's and the optimizer's state and `step` (optimizer steps completed) to `path`."""
    # TODO: your code here
    raise NotImplementedError


def load_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Restore the model's (and, when given, the optimizer's) state from `path`; return the
    number of optimizer steps completed when it was saved."""
    # TODO: your code here
    raise NotImplementedError


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
    # TODO: your code here
    raise NotImplementedError
