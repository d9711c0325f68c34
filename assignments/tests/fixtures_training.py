"""The training stage's fixtures: objects its tests build inside the worker and pass to your code.

`student.fixture("TinyGPT", vocab_size=81, block_size=8, d_model=16, n_layers=1, n_heads=2)` in
a test builds a small GPT in the process that runs your code; the grader builds the same one
to compute what to expect. TrainProbeGPT also records how your training loop runs it.
"""

from __future__ import annotations

import math
import weakref

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

# An optimizer's first step imports torch._dynamo (0.6-1.1 s): the template imports it once,
# before this stage's first worker, instead of each worker (grader/worker/fixtures.py).
PRELOAD = ("torch._dynamo",)


class TinyGPT(nn.Module):
    """A small GPT built only from torch built-ins, for grading training loops.

    tok_emb (nn.Embedding), pos_emb (nn.Embedding), blocks (nn.ModuleList of pre-norm
    nn.TransformerEncoderLayer with GELU and a causal mask), ln_f (nn.LayerNorm), and
    lm_head (nn.Linear, no bias) whose weight IS tok_emb.weight. forward(idx (B, t) int64,
    targets=None) -> (logits (B, t, vocab_size), mean F.cross_entropy or None).

    Every parameter is drawn from `seed` (biases and norm weights too, so that a wrong
    weight-decay group shows); `freeze` names parameters to create with
    requires_grad=False. For the tests it also records, inside the worker:
    `grad_calls` (forward calls made with gradients on), `train_mode_calls` (calls made
    in training mode) and, when `record_steps` > 0, `step_grads`: for each of the first
    `record_steps` optimizer steps over its parameters, {name: grad} as the optimizer saw
    it (a global optimizer step pre-hook; the tied weight appears once, as tok_emb.weight).
    """

    def __init__(self, vocab_size: int, block_size: int, d_model: int, n_layers: int, n_heads: int,
                 dropout: float = 0.0, seed: int = 0, freeze: tuple[str, ...] | list[str] = (),
                 record_steps: int = 0):
        super().__init__()
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(block_size, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=4 * d_model, dropout=dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("out_proj.weight", "linear2.weight")) else 0.02
                    p.copy_(std * torch.randn(p.shape, generator=gen))
                elif name.endswith(("norm1.weight", "norm2.weight", "ln_f.weight")):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.02 * torch.randn(p.shape, generator=gen))
        for name, p in self.named_parameters():
            if name in set(freeze):
                p.requires_grad_(False)
        self.grad_calls = 0
        self.train_mode_calls = 0
        self.record_steps = record_steps
        self.step_grads: list[dict[str, torch.Tensor | None]] = []
        if record_steps > 0:
            self._step_hook = register_optimizer_step_pre_hook(
                _StepRecorder(weakref.ref(self)))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        if idx.dim() != 2 or idx.dtype != torch.int64:
            raise TypeError(f"expected idx of shape (B, t) and dtype int64, got {tuple(idx.shape)} {idx.dtype}")
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"sequence of length {t} is longer than block_size {self.block_size}")
        self.grad_calls += int(torch.is_grad_enabled())
        self.train_mode_calls += int(self.training)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(torch.arange(t, device=idx.device)))
        mask = torch.full((t, t), float("-inf"), device=idx.device).triu(1)
        for block in self.blocks:
            x = block(x, src_mask=mask, is_causal=True)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        return logits, loss


class _StepRecorder:
    """The optimizer step pre-hook of a TinyGPT with record_steps (holds the model weakly)."""

    def __init__(self, model_ref):
        self.model_ref = model_ref

    def __call__(self, optimizer, args, kwargs) -> None:
        model = self.model_ref()
        if model is None or len(model.step_grads) >= model.record_steps:
            return
        own = {id(p) for p in model.parameters()}
        if not any(id(p) in own for group in optimizer.param_groups for p in group["params"]):
            return
        model.step_grads.append({name: None if p.grad is None else p.grad.detach().clone()
                                 for name, p in model.named_parameters()})


class TrainProbeGPT(TinyGPT):
    """TinyGPT that also logs how the training loop runs it (for the training stage's device,
    dtype and checkpoint tests); its parameters are those of TinyGPT with the same arguments.

    `forward_log`: for each of the first 64 forward calls, (device of idx as a str, the dtype
    autocast computes in on that device as a str or None when autocast is off, training mode,
    grad enabled). `crash_at`: the n-th backward pass through a loss it returned (1-based)
    raises RuntimeError("simulated preemption ..."), as a job killed mid-run would stop
    (backward, not forward: an evaluation run with gradients on never counts).
    """

    def __init__(self, *args, crash_at: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.crash_at = crash_at
        self.backward_calls = 0
        self.forward_log: list[tuple[str, str | None, bool, bool]] = []

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        grad = torch.is_grad_enabled()
        if len(self.forward_log) < 64 and isinstance(idx, torch.Tensor):
            kind = idx.device.type
            on = _autocast_dtype(kind)
            self.forward_log.append((str(idx.device), on, self.training, grad))
        logits, loss = super().forward(idx, targets)
        if self.crash_at is not None and loss is not None and loss.requires_grad:
            loss.register_hook(self._count_backward)
        return logits, loss

    def _count_backward(self, grad: torch.Tensor) -> torch.Tensor:
        self.backward_calls += 1
        if self.backward_calls >= self.crash_at:
            raise RuntimeError(f"simulated preemption at backward pass {self.crash_at} "
                               "(the grader stops the job here on purpose)")
        return grad


def _autocast_dtype(device_type: str) -> str | None:
    """The dtype autocast computes in on `device_type` now, or None when it is off."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        return str(torch.get_autocast_dtype(device_type))
    except (TypeError, AttributeError):      # torch < 2.4: the CUDA-only and CPU-only calls
        if device_type == "cuda":
            return str(torch.get_autocast_gpu_dtype()) if torch.is_autocast_enabled() else None
        return str(torch.get_autocast_cpu_dtype()) if torch.is_autocast_cpu_enabled() else None


FIXTURES = {"TinyGPT": TinyGPT, "TrainProbeGPT": TrainProbeGPT}
