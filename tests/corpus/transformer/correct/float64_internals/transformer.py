"""STYLE: LayerNorm computed in float64 and cast back; sum-based mean; F.linear and einsum with the
modules' own weights; nn.GELU module; explicit dropout modules; a Sequential-free stack walked with
a generator; positions built with torch.arange and gathered from pos_emb's rows.
REFERENCE_MODULES: attention cross_entropy embeddings
"""

import torch
from torch import nn
from torch.nn import functional as F

from attention import MultiHeadAttention
from cross_entropy import cross_entropy
from embeddings import PositionalEmbedding, TokenEmbedding


class LayerNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.d, self.eps = d_model, eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x):
        x64 = x.double()
        mean = x64.sum(dim=-1, keepdim=True) / self.d
        dev = x64 - mean
        var = (dev ** 2).sum(dim=-1, keepdim=True) / self.d
        normed = (dev / (var + self.eps).sqrt()).to(x.dtype)
        out = normed * self.weight
        return out + self.bias if self.bias is not None else out


class FeedForward(nn.Module):
    def __init__(self, d_model, d_ff=None, bias=True, dropout=0.0):
        super().__init__()
        if d_ff is None:
            d_ff = 4 * d_model
        self.fc = nn.Linear(d_model, d_ff, bias)
        self.proj = nn.Linear(d_ff, d_model, bias)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        h = self.act(F.linear(x, self.fc.weight, self.fc.bias))
        y = torch.einsum("...f,df->...d", h, self.proj.weight)
        if self.proj.bias is not None:
            y = y + self.proj.bias
        return self.drop(y)


class TransformerBlock(nn.Module):
    def __init__(self, d_model, n_heads, d_ff=None, dropout=0.0):
        super().__init__()
        self.ln1, self.ln2 = LayerNorm(d_model), LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout=dropout)

    def _attention(self, x, causal):
        return self.attn(self.ln1(x), causal=causal)

    def _mlp(self, x):
        return self.ffn(self.ln2(x))

    def forward(self, x, causal=True):
        x = x + self._attention(x, causal)
        x = x + self._mlp(x)
        return x


class GPT(nn.Module):
    def __init__(self, vocab_size, block_size, d_model, n_layers, n_heads, d_ff=None, dropout=0.0,
                 tie_weights=True):
        super().__init__()
        self.block_size = block_size
        self.tok_emb = TokenEmbedding(vocab_size, d_model)
        self.pos_emb = PositionalEmbedding(block_size, d_model)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([TransformerBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)])
        self.ln_f = LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_weights:
            self.lm_head.weight = self.tok_emb.weight

    def forward(self, idx, targets=None):
        T = idx.size(1)
        if T > self.block_size:
            raise ValueError(f"T={T} > block_size={self.block_size}")
        positions = torch.arange(T, device=idx.device)
        x = self.emb_drop(self.tok_emb(idx) + self.pos_emb.weight[positions])
        for block in (b for b in self.blocks):
            x = block(x)
        x = self.ln_f(x)
        logits = torch.einsum("btd,vd->btv", x, self.lm_head.weight)
        loss = cross_entropy(logits, targets) if targets is not None else None
        return logits, loss
