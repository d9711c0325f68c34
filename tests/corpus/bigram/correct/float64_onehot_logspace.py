"""STYLE: float64 internals; counts by one_hot matrix product, probabilities as exp(log(smoothed counts) - log(row sums)), nll picks probabilities with one_hot masks.

A correct bigram.py (corpus for the autograder); it must score the maximum.
"""

import torch
import torch.nn.functional as F

BOUNDARY = "."  # start and end of a word; index 0


def build_vocab(words: list[str]) -> tuple[dict[str, int], dict[int, str]]:
    alphabet = set().union(*map(set, words)) if words else set()
    if BOUNDARY in alphabet:
        raise ValueError("the boundary token may not appear inside a word")
    itos = dict(enumerate([BOUNDARY] + sorted(alphabet)))
    stoi = {ch: i for i, ch in itos.items()}
    return stoi, itos


def _index_pairs(words, stoi, device=None):
    encoded = [torch.tensor([stoi[c] for c in BOUNDARY + w + BOUNDARY], dtype=torch.long) for w in words]
    if not encoded:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    xs = torch.cat([e[:-1] for e in encoded]).to(device)
    ys = torch.cat([e[1:] for e in encoded]).to(device)
    return xs, ys


def bigram_counts(words: list[str], stoi: dict[str, int]) -> torch.Tensor:
    V = len(stoi)
    xs, ys = _index_pairs(words, stoi)
    X = F.one_hot(xs, V).to(torch.float64)   # (B, V): row b marks the first character
    Y = F.one_hot(ys, V).to(torch.float64)   # (B, V): row b marks the second character
    return (X.T @ Y).round().to(torch.int64)


def bigram_probs(counts: torch.Tensor, smoothing: float = 1.0) -> torch.Tensor:
    smoothed = counts.double() + smoothing
    log_totals = smoothed.sum(1, keepdim=True).log()
    logp = smoothed.log() - log_totals            # -inf where a smoothed count is 0
    probs = logp.exp()
    empty_rows = smoothed.sum(1) <= 0
    probs[empty_rows] = 1.0 / counts.size(1)
    return probs.float()


def nll(probs: torch.Tensor, words: list[str], stoi: dict[str, int]) -> float:
    V = probs.shape[0]
    xs, ys = _index_pairs(words, stoi, device=probs.device)
    P = probs.double()
    picked = ((F.one_hot(xs, V).double() @ P) * F.one_hot(ys, V).double()).sum(dim=1)
    return float(-picked.log().sum() / xs.numel())


def sample(probs: torch.Tensor, itos: dict[int, str], n: int,
           generator: torch.Generator, max_len: int = 50) -> list[str]:
    if not max_len >= 1:
        raise ValueError("max_len < 1")
    out = []
    while len(out) < n:
        chars, ix = [], 0
        for _ in range(max_len):
            ix = torch.multinomial(probs[ix], 1, replacement=True, generator=generator).item()
            if ix == 0:
                break
            chars.append(itos[ix])
        out.append("".join(chars))
    return out
