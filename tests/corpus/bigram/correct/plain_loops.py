"""STYLE: plain Python loops everywhere: nested lists for counting and normalising, math.log for the NLL, torch.tensor only at the end.

A correct bigram.py (corpus for the autograder); it must score the maximum.
"""

import math

import torch

BOUNDARY = "."  # start and end of a word; index 0


def build_vocab(words):
    seen = set()
    for word in words:
        for ch in word:
            if ch == BOUNDARY:
                raise ValueError("words may not contain the boundary token '.'")
            seen.add(ch)
    stoi = {BOUNDARY: 0}
    itos = {0: BOUNDARY}
    index = 1
    for ch in sorted(seen):
        stoi[ch] = index
        itos[index] = ch
        index += 1
    return stoi, itos


def _bigrams(words, stoi):
    for word in words:
        previous = 0
        for ch in word:
            current = stoi[ch]
            yield previous, current
            previous = current
        yield previous, 0


def bigram_counts(words, stoi):
    V = len(stoi)
    table = [[0 for _ in range(V)] for _ in range(V)]
    for i, j in _bigrams(words, stoi):
        table[i][j] += 1
    return torch.tensor(table, dtype=torch.int64)


def bigram_probs(counts, smoothing=1.0):
    rows = counts.tolist()
    V = len(rows[0]) if rows else 0
    result = []
    for row in rows:
        smoothed = [c + smoothing for c in row]
        total = 0.0
        for value in smoothed:
            total += value
        if total > 0:
            result.append([value / total for value in smoothed])
        else:
            result.append([1.0 / V] * V)
    return torch.tensor(result, dtype=torch.float32, device=counts.device)


def nll(probs, words, stoi):
    table = probs.tolist()
    total, count = 0.0, 0
    for i, j in _bigrams(words, stoi):
        p = table[i][j]
        total += math.inf if p <= 0 else -math.log(p)
        count += 1
    return total / count if count else math.nan


def sample(probs, itos, n, generator, max_len=50):
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    words = []
    for _ in range(n):
        ix = 0
        word = ""
        while True:
            ix = torch.multinomial(probs[ix], 1, replacement=True, generator=generator).item()
            if ix == 0:
                break
            word = word + itos[ix]
            if len(word) == max_len:
                break
        words.append(word)
    return words
