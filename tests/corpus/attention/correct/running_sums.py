"""STYLE: every sum is a Python loop of running sums in the inputs' dtype (float32 here):
the dot products over d, the softmax's max and denominator over the keys, and the weighted sum
of the values over the keys, each loop vectorised over all the other dims; the causal mask from
a comparison of aranges; MultiHeadAttention splits heads with unflatten and merges with flatten.
It proves the tolerances of the value tests (float32 summed in the worst order). Its loops over
the keys are Python loops over positions, which the course charges (the handout's "Python loops
over tokens"): about 12x the reference's time, over the speed test's limit.
LOSES: test_sdpa.py::test_sdpa_speed
"""

import math

import torch
from torch import nn


def causal_mask(T, device=None):
    i = torch.arange(T, device=device)
    return i[None, :] <= i[:, None]


def scaled_dot_product_attention(q, k, v, mask=None, is_causal=False):
    Tq, Tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    if is_causal and Tq != Tk:
        raise ValueError("is_causal needs Tq == Tk")
    scale = 1.0 / math.sqrt(d)
    # scores[..., i, j] = sum_c q[..., i, c] k[..., j, c], one running sum per (i, j)
    scores = torch.zeros(*torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]), Tq, Tk,
                         dtype=q.dtype, device=q.device)
    for c in range(d):
        scores = scores + q[..., :, c, None] * k[..., None, :, c]
    scores = scores * scale
    allowed = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device)
    if mask is not None:
        allowed = allowed & mask.to(q.device)
    if is_causal:
        allowed = allowed & causal_mask(Tq, q.device)
    allowed = allowed.expand(scores.shape)
    scores = torch.where(allowed, scores, torch.full_like(scores, -math.inf))
    top = scores[..., 0]
    for j in range(1, Tk):
        top = torch.maximum(top, scores[..., j])
    top = torch.where(torch.isinf(top), torch.zeros_like(top), top)
    exps = torch.exp(scores - top[..., None])
    total = torch.zeros_like(top)
    for j in range(Tk):
        total = total + exps[..., j]
    total = torch.where(total > 0, total, torch.ones_like(total))
    weights = exps / total[..., None]
    out = torch.zeros(*weights.shape[:-1], v.shape[-1], dtype=v.dtype, device=v.device)
    for j in range(Tk):
        out = out + weights[..., j, None] * v[..., j, None, :]
    return out, weights


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads, bias=True, dropout=0.0):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError("n_heads must divide d_model")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.drop_w = nn.Dropout(dropout)
        self.drop_out = nn.Dropout(dropout)

    def forward(self, x, causal=True):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (t.unflatten(-1, (self.n_heads, C // self.n_heads)).transpose(1, 2) for t in (q, k, v))
        _, w = scaled_dot_product_attention(q, k, v, is_causal=causal)
        y = self.drop_w(w) @ v
        return self.drop_out(self.out(y.transpose(1, 2).flatten(2)))
