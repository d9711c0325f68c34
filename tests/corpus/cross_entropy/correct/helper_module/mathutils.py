"""Numerical helpers of cross_entropy.py, with names that shadow the banned ones on purpose."""

import torch


def logsumexp(x, dim):
    peak = x.detach().amax(dim, keepdim=True)
    return peak + (x - peak).exp().sum(dim, keepdim=True).log()


def log_softmax(x, dim=-1):
    return x - logsumexp(x, dim)


def softmax(x, dim=-1):
    e = (x - x.detach().amax(dim, keepdim=True)).exp()
    return e / e.sum(dim, keepdim=True)
