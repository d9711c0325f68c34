"""Objects the grader ships into the worker for a test to pass to submission code.

Some student functions take an object, not data: `generate(model, ...)` samples
from a model. The hidden tests must not pass the reference solution (it never
enters the worker), so they pass a fixture from here instead:

    model = student.fixture("ContextLM", vocab_size=11, block_size=4, seed=3, device=device)
    out = student.sampling.generate(model, idx, 5, block_size=4, generator=gen)

and build the same object in the grading process (`fixtures.build(...)`) to
compute the expected result. This module is imported by the worker before it
is sandboxed, like the rest of the worker's code; fixtures are small and
deterministic. Adding a fixture means adding a class to `FIXTURES`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ContextLM(nn.Module):
    """A tiny deterministic language model whose logits depend on the whole context.

    forward(idx (B, t) int64, targets=None) -> logits (B, t, vocab_size) float32, or
    (logits, None) when `returns_tuple`. Position t's logits depend on idx[:, t] and on
    the sum of idx[:, :t+1], so a sampler that crops the context wrongly gets other
    logits; like GPT, it raises ValueError when t > block_size.
    """

    def __init__(self, vocab_size: int, block_size: int, seed: int = 0, scale: float = 3.0,
                 returns_tuple: bool = False):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.block_size = block_size
        self.returns_tuple = returns_tuple
        self.grad_calls = 0
        self.token_logits = nn.Parameter(scale * torch.randn(vocab_size, vocab_size, generator=gen))
        self.context_logits = nn.Parameter(scale * torch.randn(vocab_size, vocab_size, generator=gen))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        if idx.dim() != 2 or idx.dtype != torch.int64:
            raise TypeError(f"expected idx of shape (B, t) and dtype int64, got {tuple(idx.shape)} {idx.dtype}")
        if idx.shape[1] > self.block_size:
            raise ValueError(f"sequence of length {idx.shape[1]} is longer than block_size {self.block_size}")
        self.grad_calls += int(torch.is_grad_enabled())
        vocab_size = self.token_logits.shape[0]
        context = idx.cumsum(1) % vocab_size
        logits = self.token_logits[idx] + self.context_logits[context]
        return (logits, None) if self.returns_tuple else logits


FIXTURES = {"ContextLM": ContextLM}


def build(name: str, args: list, kwargs: dict) -> Any:
    """The fixture `name`, built with `args` and `kwargs` (`device=` moves a module there)."""
    if name not in FIXTURES:
        raise ValueError(f"unknown fixture {name!r}")
    kwargs = dict(kwargs)
    device = kwargs.pop("device", None)
    obj = FIXTURES[name](*args, **kwargs)
    if device is not None and isinstance(obj, nn.Module):
        obj = obj.to(device).eval()
    return obj
