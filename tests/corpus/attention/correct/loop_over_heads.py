"""STYLE: Python loops over heads: MultiHeadAttention over slices of d_head columns, and
scaled_dot_product_attention over dim -3; float64 internals cast back; the causal mask is a
negated triu.
"""

import math

import torch
from torch import nn


def causal_mask(T, device=None):
    return ~torch.triu(torch.ones(T, T, device=device), diagonal=1).bool()


def _attend(q, k, v, mask, is_causal):
    dtype = q.dtype
    q, k, v = q.double(), k.double(), v.double()
    scores = q.matmul(k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(mask.logical_not(), -math.inf)
    if is_causal:
        scores = scores.masked_fill(causal_mask(q.shape[-2], q.device).logical_not(), -math.inf)
    m = scores.max(-1, keepdim=True).values
    m = m.nan_to_num(0.0, posinf=0.0, neginf=0.0)
    e = (scores - m).exp()
    z = e.sum(-1, keepdim=True)
    w = e / z.where(z > 0, torch.ones_like(z))
    return (w @ v).to(dtype), w.to(dtype)


def scaled_dot_product_attention(q, k, v, mask=None, is_causal=False):
    if is_causal and q.shape[-2] != k.shape[-2]:
        raise ValueError("is_causal requires a square score matrix")
    if q.dim() < 3:
        return _attend(q, k, v, mask, is_causal)
    # one head (dim -3) at a time
    Tq, Tk = q.shape[-2], k.shape[-2]
    shape = torch.broadcast_shapes(q.shape[:-1] + (Tk,), () if mask is None else mask.shape)
    if mask is not None:
        mask = mask.expand(shape)
    outs, weights = [], []
    for h in range(q.shape[-3]):
        o, w = _attend(q[..., h, :, :], k[..., h, :, :], v[..., h, :, :],
                       None if mask is None else mask[..., h, :, :], is_causal)
        outs.append(o)
        weights.append(w)
    return torch.stack(outs, dim=-3), torch.stack(weights, dim=-3)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads, bias=True, dropout=0.0):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError("bad n_heads")
        self.n_heads, self.d_model = n_heads, d_model
        self.qkv = nn.Linear(d_model, 3 * d_model, bias)
        self.out = nn.Linear(d_model, d_model, bias)
        self.drop_w = nn.Dropout(dropout)
        self.drop_out = nn.Dropout(dropout)

    def forward(self, x, causal=True):
        C, H = self.d_model, self.n_heads
        D = C // H
        qkv = self.qkv(x)
        q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
        heads = []
        for h in range(H):  # one head at a time: (B, T, D) slices
            sl = slice(h * D, (h + 1) * D)
            _, w = scaled_dot_product_attention(q[..., sl], k[..., sl], v[..., sl], is_causal=causal)
            heads.append(self.drop_w(w) @ v[..., sl])
        return self.drop_out(self.out(torch.cat(heads, dim=-1)))
