"""The sampling stage's fixtures: objects its tests build inside the worker and pass to your code.

`student.fixture("ContextLM", vocab_size=7, block_size=4, seed=0)` in a test builds one in the
process that runs your code; the grader builds the same one to compute what to expect.
"""

from __future__ import annotations

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
