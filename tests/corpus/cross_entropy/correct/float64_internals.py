"""STYLE: float64 internals cast back to the input dtype at the end; log-sum-exp written with explicit max, exp, sum and log; the target picked by advanced indexing with torch.arange over flattened rows; torch.max instead of amax.

A correct cross_entropy.py (corpus for the autograder); it must score the maximum.
"""

import math

import torch


def _logsumexp(x, dim):
    m = torch.max(x, dim=dim, keepdim=True).values
    return m + torch.log(torch.sum(torch.exp(x - m), dim=dim, keepdim=True))


def softmax(logits, dim=-1):
    x = logits.to(torch.float64)
    return torch.exp(x - _logsumexp(x, dim)).to(logits.dtype)


def log_softmax(logits, dim=-1):
    x = logits.to(torch.float64)
    return (x - _logsumexp(x, dim)).to(logits.dtype)


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"unknown reduction {reduction!r}")
    C = logits.shape[-1]
    x = logits.to(torch.float64).reshape(-1, C)
    t = targets.reshape(-1)
    logp = x - _logsumexp(x, -1)
    counted = t != ignore_index
    rows = torch.arange(x.shape[0], device=x.device)
    picked = logp[rows, t.clamp(0, C - 1) * counted]     # ignored rows pick class 0, masked below
    per_row = -(1 - label_smoothing) * picked - label_smoothing * logp.sum(-1) / C
    per_row = per_row * counted
    if reduction == "none":
        return per_row.reshape(targets.shape).to(logits.dtype)
    total = per_row.sum()
    if reduction == "sum":
        return total.to(logits.dtype)
    return (total / counted.sum()).to(logits.dtype)


def perplexity(mean_loss):
    if isinstance(mean_loss, torch.Tensor):
        mean_loss = mean_loss.item()
    return math.exp(mean_loss)
