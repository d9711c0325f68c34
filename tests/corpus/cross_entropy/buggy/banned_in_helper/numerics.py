"""Helpers of cross_entropy.py."""

import torch


def stable_log_softmax(x, dim):
    return x - torch.logsumexp(x, dim=dim, keepdim=True)
