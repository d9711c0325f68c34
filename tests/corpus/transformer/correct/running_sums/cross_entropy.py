"""The loss with every sum a Python loop of running sums in the logits' dtype: the softmax's
denominator over the classes, and the mean over the positions."""

import math

import torch


def log_softmax(logits, dim=-1):
    x = logits.movedim(dim, -1)
    top = x[..., 0]
    for c in range(1, x.shape[-1]):
        top = torch.maximum(top, x[..., c])
    total = torch.zeros_like(top)
    for c in range(x.shape[-1]):
        total = total + torch.exp(x[..., c] - top)
    return (x - (top + torch.log(total))[..., None]).movedim(-1, dim)


def softmax(logits, dim=-1):
    return torch.exp(log_softmax(logits, dim))


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"unknown reduction {reduction!r}")
    C = logits.shape[-1]
    logp = log_softmax(logits.reshape(-1, C), dim=-1)
    flat = targets.reshape(-1)
    keep = flat != ignore_index
    picked = logp.gather(1, torch.where(keep, flat, 0)[:, None])[:, 0]
    nll = -picked
    if label_smoothing:
        nll = (1 - label_smoothing) * nll - label_smoothing * logp.mean(-1)
    nll = torch.where(keep, nll, torch.zeros_like(nll))
    if reduction == "none":
        return nll.reshape(targets.shape)
    total = torch.zeros((), dtype=nll.dtype, device=nll.device)
    for i in range(nll.shape[0]):
        total = total + nll[i]
    return total if reduction == "sum" else total / keep.sum()


def perplexity(mean_loss):
    return math.exp(float(mean_loss))
