"""Stage 5 — attention: every position looks back at the others and takes a weighted average.

Each query is compared with every key (a dot product scaled by 1/sqrt(d)); a
softmax over the keys turns the scores into weights; the output is the
weighted average of the values. A mask says which keys a query may look at:
the causal mask lets position i see positions 0..i only. Multi-head attention
runs several such averages side by side on slices of the model dimension.
See assignments/handouts/05-attention.md.
"""

import math

import torch
from torch import nn

# The library versions of what you write in this stage, and the softmax family of
# stage 3 (write the softmax yourself, or import your own: `from cross_entropy import
# softmax`). Calling one raises BannedAPIError, and a hidden test reads your source for them.
BANNED_APIS = (
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


def causal_mask(T: int, device=None) -> torch.Tensor:
    """(T, T) bool on `device`: True where query i may attend key j, that is j <= i."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None,
                                 is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d)) v, over the keys a query may attend.

    q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv); mask bool, broadcastable to
    (..., Tq, Tk), True = may attend. is_causal adds the causal mask (Tq must equal
    Tk, else ValueError); with a mask too, a key must be allowed by both.
    Returns (output (..., Tq, dv), weights (..., Tq, Tk)) in q's dtype and device.
    Masked weights are exactly 0, every row with an allowed key sums to 1, and a
    row with no allowed key has all-zero weights and a zero output.
    """
    Tq, Tk = q.shape[-2], k.shape[-2]
    if is_causal and Tq != Tk:
        raise ValueError(f"is_causal needs as many queries as keys, got Tq={Tq} and Tk={Tk}")
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    allowed = None if mask is None else mask.to(device=scores.device, dtype=torch.bool)
    if is_causal:
        tril = causal_mask(Tq, device=scores.device)
        allowed = tril if allowed is None else allowed & tril
    if allowed is not None:
        # -inf, not a large negative number: exp(-inf) is exactly 0 (and so is its gradient).
        scores = scores.masked_fill(~allowed, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exps = (scores - row_max).exp()          # masked entries: exp(-inf) = 0 exactly
    totals = exps.sum(dim=-1, keepdim=True)  # 0 only for a row with no allowed key
    weights = exps / torch.where(totals > 0, totals, torch.ones_like(totals))
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    """n_heads attentions side by side, each on d_head = d_model // n_heads dimensions.

    qkv = nn.Linear(d_model, 3 * d_model, bias) makes q | k | v (in that order along
    the last dim); out = nn.Linear(d_model, d_model, bias) mixes the heads' outputs.
    d_model % n_heads != 0 is a ValueError. In training mode, dropout applies to the
    attention weights and to the output of `out`.
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if n_heads < 1 or d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """x (B, T, d_model) -> (B, T, d_model); each position attends positions <= it when causal."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)                      # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_heads, self.d_head).transpose(1, 2)
                   for t in (q, k, v))                               # 3 x (B, H, T, d_head)
        y, weights = scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, T, d_head)
        if self.training and self.attn_dropout.p > 0:
            y = self.attn_dropout(weights) @ v                       # drop some weights
        y = y.transpose(1, 2).contiguous().view(B, T, C)             # (B, T, C)
        return self.resid_dropout(self.out(y))
