"""STYLE: collections.Counter of bigrams, torch.zeros + index_put_(accumulate=True) for counts, float32 arithmetic with masked fill for empty rows, count-weighted NLL.

A correct bigram.py (corpus for the autograder); it must score the maximum.
"""

from collections import Counter
from itertools import pairwise

import torch

BOUNDARY = "."  # start and end of a word; index 0


def build_vocab(words):
    letters = Counter(ch for w in words for ch in w)
    if letters[BOUNDARY]:
        raise ValueError(f"{BOUNDARY!r} is reserved for word boundaries")
    ordered = [BOUNDARY, *sorted(letters)]
    return {c: k for k, c in enumerate(ordered)}, {k: c for k, c in enumerate(ordered)}


def _bigram_counter(words, stoi):
    return Counter(pair for w in words for pair in pairwise(stoi[c] for c in f"{BOUNDARY}{w}{BOUNDARY}"))


def bigram_counts(words, stoi):
    V = len(stoi)
    N = torch.zeros((V, V), dtype=torch.int64)
    bigrams = _bigram_counter(words, stoi)
    if bigrams:
        keys = torch.tensor(list(bigrams.keys()), dtype=torch.int64)
        values = torch.tensor(list(bigrams.values()), dtype=torch.int64)
        N.index_put_((keys[:, 0], keys[:, 1]), values, accumulate=True)
    return N


def bigram_probs(counts, smoothing=1.0):
    P = counts.to(torch.float32) + smoothing
    sums = P.sum(dim=1, keepdim=True)
    P = P / sums
    P.masked_fill_(sums == 0, 1.0 / P.shape[1])
    return P


def nll(probs, words, stoi):
    bigrams = _bigram_counter(words, stoi)
    keys = torch.tensor(list(bigrams.keys()), dtype=torch.int64, device=probs.device).reshape(-1, 2)
    weights = torch.tensor(list(bigrams.values()), dtype=torch.float64, device=probs.device)
    logp = probs[keys[:, 0], keys[:, 1]].double().log()
    return (-(weights * logp).sum() / weights.sum()).item()


def _draw_word(row_of, itos, generator, max_len):
    ix = 0
    while True:
        ix = torch.multinomial(row_of(ix), 1, replacement=True, generator=generator).item()
        if ix == 0:
            return
        yield itos[ix]


def sample(probs, itos, n, generator, max_len=50):
    if max_len < 1:
        raise ValueError("max_len must be positive")
    words = []
    for _ in range(n):
        word = ""
        for ch in _draw_word(probs.__getitem__, itos, generator, max_len):
            word += ch
            if len(word) == max_len:
                break
        words.append(word)
    return words
