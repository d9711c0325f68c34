"""STYLE: split over two modules: the numerics live in a helper module (mathutils.py) that defines its own logsumexp and softmax functions with those names; cross_entropy builds a one-hot target mixture with F.one_hot and contracts it with torch.einsum; masks multiply instead of torch.where.

A correct cross_entropy.py (corpus for the autograder); it must score the maximum.
"""

import torch
import torch.nn.functional as F

import mathutils
from mathutils import log_softmax, softmax  # noqa: F401 -- re-exported for the grader


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    if reduction == "none" or reduction == "sum" or reduction == "mean":
        pass
    else:
        raise ValueError("unsupported reduction " + str(reduction))
    C = logits.size(-1)
    logp = logits - mathutils.logsumexp(logits, -1)
    mask = (targets != ignore_index).to(logits.dtype)
    onehot = F.one_hot(torch.where(targets == ignore_index, 0, targets), C).to(logits.dtype)
    q = (1 - label_smoothing) * onehot + label_smoothing / C
    loss = -torch.einsum("...c,...c->...", q, logp) * mask
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / mask.sum()


def perplexity(mean_loss):
    return torch.as_tensor(mean_loss, dtype=torch.float64).exp().item()
