"""STYLE: LayerNorm via var(unbiased=False) and rsqrt; GELU written with torch.erf by hand;
functional dropout with training=self.training; lm_head defined before tok_emb (so the tied
Parameter is named lm_head.weight in named_parameters); the loss on flattened logits.
REFERENCE_MODULES: attention cross_entropy embeddings
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import attention
from cross_entropy import cross_entropy
from embeddings import PositionalEmbedding, TokenEmbedding


class LayerNorm(nn.Module):
    def __init__(self, d_model, eps=1e-5, bias=True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        if bias:
            self.bias = nn.Parameter(torch.zeros(d_model))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        out = (x - mu) * torch.rsqrt(var + self.eps) * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


class FeedForward(nn.Module):
    def __init__(self, d_model, d_ff=None, bias=True, dropout=0.0):
        super().__init__()
        hidden = d_ff or 4 * d_model
        self.fc = nn.Linear(d_model, hidden, bias=bias)
        self.proj = nn.Linear(hidden, d_model, bias=bias)
        self.p = dropout

    def forward(self, x):
        return F.dropout(self.proj(gelu(self.fc(x))), self.p, training=self.training)


class TransformerBlock(nn.Module):
    def __init__(self, d_model, n_heads, d_ff=None, dropout=0.0):
        super().__init__()
        self.ln1 = LayerNorm(d_model)
        self.attn = attention.MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ln2 = LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout=dropout)

    def forward(self, x, causal=True):
        a = self.attn(self.ln1(x), causal)
        x = a + x
        return x + self.ffn(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, block_size, d_model, n_layers, n_heads, d_ff=None, dropout=0.0,
                 tie_weights=True):
        super().__init__()
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.tok_emb = TokenEmbedding(vocab_size, d_model)
        self.pos_emb = PositionalEmbedding(block_size, d_model)
        self.blocks = nn.ModuleList()
        for _ in range(n_layers):
            self.blocks.append(TransformerBlock(d_model, n_heads, d_ff, dropout))
        self.ln_f = LayerNorm(d_model)
        self.p = dropout
        self.block_size = block_size
        if tie_weights:
            self.lm_head.weight = self.tok_emb.weight

    def forward(self, idx, targets=None):
        B, T = idx.shape
        if not T <= self.block_size:
            raise ValueError("too long")
        h = self.tok_emb(idx) + self.pos_emb(T).unsqueeze(0)
        h = F.dropout(h, self.p, self.training)
        for i in range(len(self.blocks)):
            h = self.blocks[i](h)
        logits = self.lm_head(self.ln_f(h))
        if targets is None:
            return logits, None
        V = logits.shape[-1]
        return logits, cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T))
