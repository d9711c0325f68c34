"""STYLE: Python loops with float32 running sums: the softmax denominator summed class by class in a Python loop over the class dimension (vectorised over rows, in the input dtype, the most rounding-prone order), the loss taken per row in a Python loop and accumulated in a running 0-dim float32 total; the smoothing mean as a running sum over the classes too.

A correct cross_entropy.py (corpus for the autograder); it must score the maximum.
"""

import math

import torch


def _rows_last(logits, dim):
    x = logits.movedim(dim, -1)
    return x, x.reshape(-1, x.shape[-1])


def _denominator(rows, biggest):
    """Σ_j exp(rows[:, j] - biggest), one class at a time: a float32 running sum."""
    total = torch.zeros_like(biggest)
    for j in range(rows.shape[1]):
        total = total + torch.exp(rows[:, j] - biggest)
    return total


def softmax(logits, dim=-1):
    x, rows = _rows_last(logits, dim)
    biggest = rows.max(dim=1).values.detach()
    probs = torch.exp(rows - biggest[:, None]) / _denominator(rows, biggest)[:, None]
    return probs.reshape(x.shape).movedim(-1, dim)


def log_softmax(logits, dim=-1):
    x, rows = _rows_last(logits, dim)
    biggest = rows.max(dim=1).values.detach()
    lse = biggest + torch.log(_denominator(rows, biggest))
    return (rows - lse[:, None]).reshape(x.shape).movedim(-1, dim)


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"unknown reduction {reduction!r}")
    n_classes = logits.shape[-1]
    logp = log_softmax(logits.reshape(-1, n_classes))
    labels = targets.reshape(-1).tolist()
    smooth = None
    if label_smoothing:
        smooth = torch.zeros_like(logp[:, 0])
        for j in range(n_classes):                    # running sum of -log p over the classes
            smooth = smooth - logp[:, j]
        smooth = smooth / n_classes
    total = logits.new_zeros(())                      # running float32 (or float64) total
    per_row, counted = [], 0
    for i, label in enumerate(labels):
        if label == ignore_index:
            loss = logp[i, 0] * 0.0
        else:
            counted += 1
            loss = -logp[i, label]
            if smooth is not None:
                loss = (1.0 - label_smoothing) * loss + label_smoothing * smooth[i]
        per_row.append(loss)
        total = total + loss
    if reduction == "none":
        return torch.stack(per_row).reshape(targets.shape) if per_row else logits.new_zeros(targets.shape)
    if reduction == "sum":
        return total
    return total / counted if counted else total * math.nan


def perplexity(mean_loss):
    return math.exp(mean_loss.item() if isinstance(mean_loss, torch.Tensor) else mean_loss)
