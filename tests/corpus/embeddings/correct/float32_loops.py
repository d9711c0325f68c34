"""STYLE: Python loops with float32 running sums: cosine_similarity accumulates a·b, |a|^2 and |b|^2 one coordinate at a time in float32 (vectorised over the batch, the most rounding-prone order), nearest scores the table row by row with its own float32 loop and picks the k best by repeated max; one_hot, lookup (a stack of rows) and the sinusoid (float32 angles) all written as loops.

A correct embeddings.py (corpus for the autograder); it must score the maximum.
"""

import math

import torch
from torch import nn


def one_hot(ids, num_classes):
    flat = ids.reshape(-1)
    out = torch.zeros(flat.numel(), num_classes, dtype=torch.float32, device=ids.device)
    for row, i in enumerate(flat.tolist()):
        out[row, i] = 1.0
    return out.reshape(*ids.shape, num_classes)


class TokenEmbedding(nn.Module):
    def __init__(self, vocab_size, d_model):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab_size, d_model) * 0.02)

    def forward(self, ids):
        values = ids.reshape(-1).tolist()
        for i in values:
            if not 0 <= i < self.weight.shape[0]:
                raise IndexError(f"token id {i} out of range")
        if not values:
            return self.weight[:0].reshape(*ids.shape, self.weight.shape[1])
        rows = torch.stack([self.weight[i] for i in values])
        return rows.reshape(*ids.shape, self.weight.shape[1])


class PositionalEmbedding(nn.Module):
    def __init__(self, block_size, d_model):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(block_size, d_model) * 0.02)

    def forward(self, seq_len):
        if seq_len > self.weight.shape[0]:
            raise ValueError("seq_len > block_size")
        return torch.stack([self.weight[p] for p in range(seq_len)]) if seq_len else self.weight[:0]


def sinusoidal_positions(seq_len, d_model):
    if d_model % 2:
        raise ValueError("d_model must be even")
    pe = torch.zeros(seq_len, d_model, dtype=torch.float32)
    for i in range(0, d_model, 2):
        freq = torch.tensor(1.0 / 10000 ** (i / d_model), dtype=torch.float32)
        for p in range(seq_len):
            angle = torch.tensor(float(p), dtype=torch.float32) * freq
            pe[p, i] = torch.sin(angle)
            pe[p, i + 1] = torch.cos(angle)
    return pe


def cosine_similarity(a, b, eps=1e-8):
    a, b = torch.broadcast_tensors(a, b)
    dot = torch.zeros(a.shape[:-1], dtype=a.dtype, device=a.device)
    aa, bb = torch.zeros_like(dot), torch.zeros_like(dot)
    for i in range(a.shape[-1]):          # running sums, one coordinate at a time
        x, y = a[..., i], b[..., i]
        dot = dot + x * y
        aa = aa + x * x
        bb = bb + y * y
    return dot / (torch.sqrt(aa).clamp_min(eps) * torch.sqrt(bb).clamp_min(eps))


def nearest(query, table, k=1, exclude=()):
    scores = []
    for row in table:                      # one float32 loop per row
        s = torch.zeros((), dtype=table.dtype, device=table.device)
        qq, rr = torch.zeros_like(s), torch.zeros_like(s)
        for q, r in zip(query, row):
            s, qq, rr = s + q * r, qq + q * q, rr + r * r
        scores.append(float(s / (torch.sqrt(qq).clamp_min(1e-8) * torch.sqrt(rr).clamp_min(1e-8))))
    banned = set(int(i) for i in exclude)
    chosen = []
    for _ in range(k):                     # repeated max
        best, best_score = None, -math.inf
        for i, score in enumerate(scores):
            if i in banned or i in chosen:
                continue
            if best is None or score > best_score:
                best, best_score = i, score
        chosen.append(best)
    return torch.tensor(chosen, dtype=torch.int64, device=table.device)


def analogy(table, a, b, c, k=1):
    return nearest(table[b] - table[a] + table[c], table, k, exclude=[a, b, c])
