"""BUG: the submission has no attention.py, which transformer.py imports.
EXPECT: No module named 'attention'
CAUGHT_BY: test_transformer_1_layernorm.py::test_layernorm_parameters
"""

import torch
from torch import nn
from torch.nn import functional as F

from attention import MultiHeadAttention
from cross_entropy import cross_entropy
from embeddings import PositionalEmbedding, TokenEmbedding

# The library versions of what you write in this stage, and everything the attention
# stage bans (which includes the softmax family of stage 3). Calling one raises
# BannedAPIError, and a hidden test reads your source (and your helper modules) for them.
# torch.nn.functional.gelu is allowed.
BANNED_APIS = (
    "torch.nn.LayerNorm",
    "torch.nn.functional.layer_norm",
    "torch.layer_norm",
    "torch.native_layer_norm",
    "torch.nn.Transformer*",
    "torch.nn.functional.scaled_dot_product_attention",
    "torch.nn.MultiheadAttention",
    "torch.nn.functional.multi_head_attention_forward",
    "torch.nn.Softmax",
    "torch.nn.LogSoftmax",
    "torch.nn.functional.softmax",
    "torch.nn.functional.log_softmax",
    "torch.softmax",
    "torch.log_softmax",
    "torch.Tensor.softmax",
    "torch.Tensor.log_softmax",
    "torch.logsumexp",
    "torch.Tensor.logsumexp",
    "torch.special.softmax",
    "torch.special.log_softmax",
    "torch.special.logsumexp",
    "torch.nn.functional.cross_entropy",
    "torch.nn.functional.nll_loss",
    "torch.nn.CrossEntropyLoss",
    "torch.nn.NLLLoss",
)


class LayerNorm(nn.Module):
    """Normalise each vector over its LAST dim to mean 0 and variance 1, then scale and shift."""

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True):
        """weight: nn.Parameter (d_model,) of ones; bias: nn.Parameter (d_model,) of zeros
        when `bias`, else no bias at all (None). `eps` is kept for forward."""
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., d_model) -> same shape, dtype and device:
        (x - mean) / sqrt(var + eps) * weight + bias, where mean and var are taken over the
        last dim and var is the BIASED variance (divide by d_model, not d_model - 1)."""
        mean = x.mean(dim=-1, keepdim=True)
        centered = x - mean
        var = (centered * centered).mean(dim=-1, keepdim=True)
        y = centered / torch.sqrt(var + self.eps) * self.weight
        return y if self.bias is None else y + self.bias


class FeedForward(nn.Module):
    """The position-wise network: Linear, exact GELU, Linear, dropout."""

    def __init__(self, d_model: int, d_ff: int | None = None, bias: bool = True,
                 dropout: float = 0.0):
        """fc = nn.Linear(d_model, d_ff, bias), proj = nn.Linear(d_ff, d_model, bias), with
        d_ff = 4 * d_model when None; dropout (probability `dropout`) on the output of proj."""
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.fc = nn.Linear(d_model, d_ff, bias=bias)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., d_model) -> (..., d_model): dropout(proj(gelu(fc(x)))), where gelu is the
        exact GELU x * Phi(x) = x * (1 + erf(x / sqrt(2))) / 2, not its tanh approximation."""
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class TransformerBlock(nn.Module):
    """One pre-norm block: x + attn(ln1(x)), then + ffn(ln2(.))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None, dropout: float = 0.0):
        """ln1 = LayerNorm(d_model), attn = MultiHeadAttention(d_model, n_heads, dropout=dropout),
        ln2 = LayerNorm(d_model), ffn = FeedForward(d_model, d_ff, dropout=dropout)."""
        super().__init__()
        self.ln1 = LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ln2 = LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout=dropout)

    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """x (B, T, d_model) -> (B, T, d_model):
        x = x + attn(ln1(x), causal); x = x + ffn(ln2(x))."""
        x = x + self.attn(self.ln1(x), causal=causal)
        x = x + self.ffn(self.ln2(x))
        return x


class GPT(nn.Module):
    """Token + position embeddings, n_layers blocks, a final layer norm, and the logits head."""

    def __init__(self, vocab_size: int, block_size: int, d_model: int, n_layers: int, n_heads: int,
                 d_ff: int | None = None, dropout: float = 0.0, tie_weights: bool = True):
        """tok_emb = TokenEmbedding(vocab_size, d_model), pos_emb = PositionalEmbedding(block_size,
        d_model), dropout on the sum of the two, blocks = nn.ModuleList of n_layers
        TransformerBlock(d_model, n_heads, d_ff, dropout), ln_f = LayerNorm(d_model),
        lm_head = nn.Linear(d_model, vocab_size, bias=False). With tie_weights, lm_head.weight
        IS tok_emb.weight (one Parameter used twice)."""
        super().__init__()
        self.block_size = block_size
        self.tok_emb = TokenEmbedding(vocab_size, d_model)
        self.pos_emb = PositionalEmbedding(block_size, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, d_ff, dropout)
                                    for _ in range(n_layers))
        self.ln_f = LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_weights:
            self.lm_head.weight = self.tok_emb.weight

    def forward(self, idx: torch.Tensor,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) int64 with T <= block_size (else ValueError) -> (logits, loss):
        logits (B, T, vocab_size); loss = cross_entropy(logits, targets), the mean over all
        B * T positions (your own cross_entropy), when targets (B, T) int64 is given, else None."""
        T = idx.shape[-1]
        if T > self.block_size:
            raise ValueError(f"sequence of length {T} is longer than block_size {self.block_size}")
        x = self.dropout(self.tok_emb(idx) + self.pos_emb(T))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None if targets is None else cross_entropy(logits, targets)
        return logits, loss
