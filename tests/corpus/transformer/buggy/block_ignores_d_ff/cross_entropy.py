"""Stage 3 — the loss: softmax, log-softmax and cross-entropy, written by hand.

A language model outputs one row of logits per position; the loss is the
negative log-probability it gives the true next token, averaged over the
positions that count. See assignments/handouts/03-cross_entropy.md.
"""

import math

import torch

# The library versions of what you write in this stage. Calling one raises
# BannedAPIError, and a hidden test reads your source for them.
BANNED_APIS = (
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

REDUCTIONS = ("mean", "sum", "none")


def softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """exp(logits) normalised to sum to 1 along `dim`; same shape, dtype and device.

    Finite for |logits| up to 1e4 in float32: the max along `dim` is subtracted first.
    """
    shifted = logits - logits.amax(dim=dim, keepdim=True).detach()
    exps = shifted.exp()
    return exps / exps.sum(dim=dim, keepdim=True)


def log_softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log(softmax(logits, dim)), computed as x - max - log(sum(exp(x - max))); same shape,
    dtype and device. Finite for |logits| up to 1e4 in float32."""
    shifted = logits - logits.amax(dim=dim, keepdim=True).detach()
    return shifted - shifted.exp().sum(dim=dim, keepdim=True).log()


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of `logits` (..., C), class dimension LAST, against `targets` (...) int64.

    Per position: (1 - eps) * (-log p[target]) + eps * mean over the C classes of -log p,
    with eps = label_smoothing, and 0 where target == ignore_index.
    reduction "none": the per-position losses, shaped like `targets`;
    "sum": their sum; "mean": their sum / the number of non-ignored targets (NaN if none).
    Same values and gradients as F.cross_entropy(logits.reshape(-1, C), targets.reshape(-1), ...).
    Any other reduction is a ValueError. Returns a tensor of the logits' dtype and device.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    logp = log_softmax(logits, dim=-1)
    keep = targets != ignore_index
    safe_targets = torch.where(keep, targets, torch.zeros_like(targets))
    nll = -logp.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll + label_smoothing * (-logp.mean(dim=-1))
    losses = torch.where(keep, nll, torch.zeros_like(nll))
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / keep.sum()


def perplexity(mean_loss: float | torch.Tensor) -> float:
    """exp(mean_loss) as a Python float: the model is as unsure as a uniform choice among
    that many tokens. `mean_loss` is a number or a one-element tensor (on any device)."""
    return math.exp(float(mean_loss))
