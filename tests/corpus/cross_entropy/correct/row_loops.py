"""STYLE: loops over rows: every row's log-sum-exp by hand (max, exp, sum, log), the losses collected in a Python list and stacked; the smoothing target built as an explicit distribution q and the loss written as sum(q * -log p); softmax over any dim by moving that dim last.

A correct cross_entropy.py (corpus for the autograder); it must score the maximum.
"""

import math

import torch


def log_softmax(logits, dim=-1):
    x = logits.movedim(dim, -1)
    biggest = x.max(dim=-1, keepdim=True)[0]
    lse = biggest + (x - biggest).exp().sum(dim=-1, keepdim=True).log()
    return (x - lse).movedim(-1, dim)


def softmax(logits, dim=-1):
    return log_softmax(logits, dim).exp()


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    if reduction not in ["mean", "sum", "none"]:
        raise ValueError("reduction must be 'mean', 'sum' or 'none'")
    n_classes = logits.shape[-1]
    rows = logits.reshape(-1, n_classes)
    labels = targets.reshape(-1).tolist()
    losses, counted = [], 0
    for row, label in zip(rows, labels):
        if label == ignore_index:
            losses.append(row.sum() * 0.0)       # keeps dtype, device and the graph
            continue
        counted += 1
        m = row.max()
        logp = row - (m + torch.log(torch.sum(torch.exp(row - m))))
        q = torch.full_like(row, label_smoothing / n_classes)
        q[label] += 1.0 - label_smoothing
        losses.append(-(q * logp).sum())
    per_position = torch.stack(losses) if losses else rows.sum(-1)
    if reduction == "none":
        return per_position.reshape(targets.shape)
    if reduction == "sum":
        return per_position.sum()
    return per_position.sum() / counted if counted else per_position.sum() / 0.0


def perplexity(mean_loss):
    return float(math.exp(float(mean_loss)))
