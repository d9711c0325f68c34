"""STYLE: one_hot with scatter_, lookup with index_select on the flattened ids, float32 exp/log sinusoid (the Annotated Transformer's), stack-and-flatten interleaving, cosine by normalising each side first (F.normalize) with the norm product clamped, nearest by sort and a Python filter, a helper for range checks.

A correct embeddings.py (corpus for the autograder); it must score the maximum.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check_range(ids: Tensor, size: int) -> None:
    if ids.numel() == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= size:
        raise IndexError(f"ids must be in [0, {size}), got [{lo}, {hi}]")


def one_hot(ids: Tensor, num_classes: int) -> Tensor:
    out = torch.zeros(*ids.shape, num_classes, dtype=torch.float32, device=ids.device)
    return out.scatter_(-1, ids.unsqueeze(-1).long(), 1.0)


class TokenEmbedding(nn.Module):
    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.normal(0.0, 0.02, size=(vocab_size, d_model)))

    def forward(self, ids: Tensor) -> Tensor:
        _check_range(ids, self.weight.size(0))
        flat = self.weight.index_select(0, ids.reshape(-1))
        return flat.reshape(*ids.shape, self.weight.size(1))


class PositionalEmbedding(nn.Module):
    def __init__(self, block_size: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(block_size, d_model).mul_(0.02))

    def forward(self, seq_len: int) -> Tensor:
        if not seq_len <= self.weight.size(0):
            raise ValueError(f"seq_len {seq_len} > block_size {self.weight.size(0)}")
        return self.weight.narrow(0, 0, seq_len)


def sinusoidal_positions(seq_len: int, d_model: int) -> Tensor:
    if d_model % 2 == 1:
        raise ValueError("odd d_model")
    position = torch.arange(0, seq_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2) * -(math.log(10000.0) / d_model))
    angles = position * div_term
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(start_dim=1)


def cosine_similarity(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    na = a.norm(dim=-1, keepdim=True)
    nb = b.norm(dim=-1, keepdim=True)
    dot = (a * b).sum(-1, keepdim=True)
    return (dot / (na * nb).clamp(min=eps)).squeeze(-1)


def nearest(query: Tensor, table: Tensor, k: int = 1, exclude=()) -> Tensor:
    sims = cosine_similarity(table, query)
    order = torch.sort(sims, descending=True).indices.tolist()
    excluded = set(exclude)
    picked = [i for i in order if i not in excluded][:k]
    return torch.tensor(picked, dtype=torch.int64, device=table.device)


def analogy(table: Tensor, a: int, b: int, c: int, k: int = 1) -> Tensor:
    return nearest(table[b] + (table[c] - table[a]), table, k, [a, b, c])
