"""STYLE: einsum for the scores and the output, the scale applied to q first, a masked softmax
that zeroes masked weights with torch.where after the exp.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def causal_mask(T, device=None):
    i = torch.arange(T, device=device)
    return i[None, :] <= i[:, None]


def scaled_dot_product_attention(q, k, v, mask=None, is_causal=False):
    Tq, Tk = q.shape[-2], k.shape[-2]
    if is_causal and Tq != Tk:
        raise ValueError(f"is_causal with Tq={Tq} != Tk={Tk}")
    scores = torch.einsum("...qd,...kd->...qk", q / math.sqrt(q.shape[-1]), k)
    allowed = torch.ones_like(scores, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask
    if is_causal:
        allowed = allowed & causal_mask(Tq, q.device)
    neg = torch.finfo(scores.dtype).min
    scores = torch.where(allowed, scores, torch.full_like(scores, neg))
    shifted = scores - scores.max(dim=-1, keepdim=True).values
    exps = torch.where(allowed, shifted.exp(), torch.zeros_like(shifted))
    total = exps.sum(dim=-1, keepdim=True)
    weights = exps / total.clamp_min(torch.finfo(total.dtype).tiny)
    return torch.einsum("...qk,...kd->...qd", weights, v), weights


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads, bias=True, dropout=0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError("d_model must be a multiple of n_heads")
        self.h = n_heads
        self.p = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x, causal=True):
        B, T, C = x.shape
        h, dh = self.h, C // self.h
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, T, h, dh).permute(0, 2, 1, 3) for t in (q, k, v))
        _, w = scaled_dot_product_attention(q, k, v, is_causal=causal)
        w = F.dropout(w, self.p, training=self.training)
        y = torch.einsum("bhqk,bhkd->bqhd", w, v).reshape(B, T, C)
        return F.dropout(self.out(y), self.p, training=self.training)
