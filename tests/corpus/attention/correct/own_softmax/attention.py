"""STYLE: imports the submission's own softmax from cross_entropy.py (allowed: it is not a
banned API) and masks with -inf; all-masked rows are zeroed afterwards with torch.where.
"""

import math

import torch
from torch import nn

from cross_entropy import softmax


def causal_mask(T, device=None):
    return torch.ones((T, T), device=device).tril() == 1


def scaled_dot_product_attention(q, k, v, mask=None, is_causal=False):
    Tq, Tk = q.size(-2), k.size(-2)
    if is_causal and Tq != Tk:
        raise ValueError("Tq must equal Tk when is_causal")
    allowed = None
    if mask is not None:
        allowed = mask
    if is_causal:
        cm = causal_mask(Tq, q.device)
        allowed = cm if allowed is None else allowed & cm
    scores = q @ k.mT / math.sqrt(q.size(-1))
    if allowed is None:
        w = softmax(scores, dim=-1)
    else:
        allowed = allowed.expand_as(scores)
        none_allowed = ~allowed.any(dim=-1, keepdim=True)
        # Rows with no allowed key: keep them finite for the softmax, then zero them.
        scores = scores.masked_fill(~allowed & ~none_allowed, float("-inf"))
        w = softmax(scores, dim=-1)
        w = torch.where(none_allowed, torch.zeros_like(w), w)
    return w @ v, w


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads, bias=True, dropout=0.0):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"{d_model} % {n_heads} != 0")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.attn_drop = nn.Dropout(dropout)
        self.out_drop = nn.Dropout(dropout)

    def forward(self, x, causal=True):
        B, T, C = x.size()
        H = self.n_heads
        q, k, v = self.qkv(x).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
        _, w = scaled_dot_product_attention(q, k, v, is_causal=causal)
        y = (self.attn_drop(w) @ v).transpose(1, 2).reshape(B, T, C)
        return self.out_drop(self.out(y))
