"""STYLE: lookup as one_hot(ids) @ weight itself, range check with a boolean mask, PositionalEmbedding via index_select, float64 sinusoid built with Python loops and math, cosine via einsum with eps added to the norm product, nearest via argsort over a masked copy.

A correct embeddings.py (corpus for the autograder); it must score the maximum.
"""

import math

import torch
import torch.nn as nn


def one_hot(ids, num_classes):
    out = torch.zeros(*ids.shape, num_classes, device=ids.device)
    for c in range(num_classes):
        out[..., c] = (ids == c).float()
    return out


class TokenEmbedding(nn.Module):
    def __init__(self, vocab_size, d_model):
        super().__init__()
        self.vocab_size = vocab_size
        self.weight = nn.Parameter(torch.empty(vocab_size, d_model))
        nn.init.normal_(self.weight, mean=0.0, std=0.02)

    def forward(self, ids):
        if ((ids < 0) | (ids >= self.vocab_size)).any():
            raise IndexError("token id out of range")
        return one_hot(ids, self.vocab_size).to(self.weight.dtype) @ self.weight


class PositionalEmbedding(nn.Module):
    def __init__(self, block_size, d_model):
        super().__init__()
        self.block_size = block_size
        self.weight = nn.Parameter(0.02 * torch.randn(block_size, d_model))

    def forward(self, seq_len):
        if seq_len > self.block_size:
            raise ValueError("sequence longer than block_size")
        positions = torch.arange(seq_len, device=self.weight.device)
        return self.weight.index_select(0, positions)


def sinusoidal_positions(seq_len, d_model):
    if d_model % 2 != 0:
        raise ValueError("d_model must be even")
    rows = []
    for p in range(seq_len):
        row = []
        for i in range(d_model // 2):
            angle = p / 10000 ** (2 * i / d_model)
            row += [math.sin(angle), math.cos(angle)]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64).reshape(seq_len, d_model).float()


def cosine_similarity(a, b, eps=1e-8):
    a, b = torch.broadcast_tensors(a, b)
    dot = torch.einsum("...d,...d->...", a, b)
    norms = torch.sqrt(torch.einsum("...d,...d->...", a, a)) * torch.sqrt(torch.einsum("...d,...d->...", b, b))
    return dot / (norms + eps)


def nearest(query, table, k=1, exclude=()):
    sims = cosine_similarity(query.unsqueeze(0), table).clone()
    for i in exclude:
        sims[i] = float("-inf")
    return torch.argsort(sims, descending=True)[:k]


def analogy(table, a, b, c, k=1):
    target = table[b] - table[a] + table[c]
    return nearest(target, table, k=k, exclude=[a, b, c])
