"""STYLE: LayerNorm with an explicit loop over the features for the sums and (var + eps) ** -0.5;
the exact GELU through Phi = (1 + erf(x / sqrt 2)) / 2 with a tensor sqrt; dropout layers named
differently; blocks run with an index loop; the ValueError raised before any lookup.
REFERENCE_MODULES: attention cross_entropy embeddings
"""

import torch
from torch import nn

from attention import MultiHeadAttention
from cross_entropy import cross_entropy
from embeddings import PositionalEmbedding, TokenEmbedding


class LayerNorm(nn.Module):
    def __init__(self, d_model, eps=1e-5, bias=True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x):
        d = x.shape[-1]
        total = torch.zeros_like(x[..., :1])
        for i in range(d):
            total = total + x[..., i:i + 1]
        mean = total / d
        squares = torch.zeros_like(total)
        for i in range(d):
            squares = squares + (x[..., i:i + 1] - mean) ** 2
        var = squares / d
        y = (x - mean) * (var + self.eps) ** -0.5
        y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


class FeedForward(nn.Module):
    def __init__(self, d_model, d_ff=None, bias=True, dropout=0.0):
        super().__init__()
        d_ff = d_ff if d_ff is not None else d_model * 4
        self.fc = nn.Linear(d_model, d_ff, bias=bias)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout_layer = nn.Dropout(p=dropout)

    def forward(self, x):
        h = self.fc(x)
        phi = 0.5 * (1 + torch.erf(h / torch.sqrt(torch.tensor(2.0, dtype=h.dtype, device=h.device))))
        return self.dropout_layer(self.proj(h * phi))


class TransformerBlock(nn.Module):
    def __init__(self, d_model, n_heads, d_ff=None, dropout=0.0):
        super().__init__()
        self.ln1 = LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, True, dropout)
        self.ln2 = LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, True, dropout)

    def forward(self, x, causal=True):
        residual = x
        x = residual + self.attn(self.ln1(residual), causal=causal)
        residual = x
        return residual + self.ffn(self.ln2(residual))


class GPT(nn.Module):
    def __init__(self, vocab_size, block_size, d_model, n_layers, n_heads, d_ff=None, dropout=0.0,
                 tie_weights=True):
        super().__init__()
        self.block_size = block_size
        self.n_layers = n_layers
        self.tok_emb = TokenEmbedding(vocab_size, d_model)
        self.pos_emb = PositionalEmbedding(block_size, d_model)
        self.blocks = nn.ModuleList([])
        for _ in range(n_layers):
            self.blocks.append(TransformerBlock(d_model, n_heads, d_ff=d_ff, dropout=dropout))
        self.ln_f = LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.input_dropout = nn.Dropout(dropout)
        if tie_weights:
            self.lm_head.weight = self.tok_emb.weight

    def forward(self, idx, targets=None):
        if idx.shape[1] > self.block_size:
            raise ValueError("sequence longer than block_size")
        tok = self.tok_emb(idx)
        pos = self.pos_emb(idx.shape[1])
        x = self.input_dropout(tok + pos)
        for i in range(self.n_layers):
            x = self.blocks[i](x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = cross_entropy(logits, targets)
        return logits, loss
