"""BUG: the default max_len is 20 instead of 50
EXPECT: every word should have 50 characters
PART: test_sample_default_max_len

The reference with exactly this one mistake (corpus for the autograder).
"""

import torch

BOUNDARY = "."  # start and end of a word; index 0


def build_vocab(words: list[str]) -> tuple[dict[str, int], dict[int, str]]:
    """Map "." to 0 and every distinct character of `words`, in sorted order, to 1..V-1.

    Returns (stoi, itos), inverse dicts. A word containing "." is a ValueError.
    """
    chars = sorted(set("".join(words)))
    if BOUNDARY in chars:
        raise ValueError(f"a word contains the boundary token {BOUNDARY!r}")
    stoi = {BOUNDARY: 0} | {ch: i for i, ch in enumerate(chars, start=1)}
    itos = {i: ch for ch, i in stoi.items()}
    return stoi, itos


def bigram_counts(words: list[str], stoi: dict[str, int]) -> torch.Tensor:
    """(V, V) int64 counts: N[i, j] = how often character j follows character i
    over all "." + w + "." (V = len(stoi))."""
    V = len(stoi)
    firsts, seconds = [], []
    for word in words:
        ids = [stoi[ch] for ch in BOUNDARY + word + BOUNDARY]
        firsts.extend(ids[:-1])
        seconds.extend(ids[1:])
    pairs = torch.tensor(firsts, dtype=torch.int64) * V + torch.tensor(seconds, dtype=torch.int64)
    return torch.bincount(pairs, minlength=V * V).view(V, V)


def bigram_probs(counts: torch.Tensor, smoothing: float = 1.0) -> torch.Tensor:
    """(V, V) float32 on the device of `counts`: row i = (counts[i] + smoothing) / its sum.

    A row that sums to 0 (possible with smoothing 0) becomes uniform, 1 / V each.
    """
    smoothed = counts.to(torch.float64) + smoothing
    totals = smoothed.sum(dim=1, keepdim=True)
    uniform = torch.full_like(smoothed, 1.0 / counts.shape[1])
    probs = torch.where(totals > 0, smoothed / totals.clamp_min(1e-300), uniform)
    return probs.to(torch.float32)


def nll(probs: torch.Tensor, words: list[str], stoi: dict[str, int]) -> float:
    """Mean negative log-likelihood (natural log) of every bigram of "." + w + "."
    under `probs`; infinite when a bigram has probability 0."""
    firsts, seconds = [], []
    for word in words:
        ids = [stoi[ch] for ch in BOUNDARY + word + BOUNDARY]
        firsts.extend(ids[:-1])
        seconds.extend(ids[1:])
    rows = torch.tensor(firsts, dtype=torch.int64, device=probs.device)
    cols = torch.tensor(seconds, dtype=torch.int64, device=probs.device)
    return -torch.log(probs[rows, cols].to(torch.float64)).mean().item()


def sample(probs: torch.Tensor, itos: dict[int, str], n: int,
           generator: torch.Generator, max_len: int = 20) -> list[str]:
    """Draw `n` words, each character from probs[previous] with torch.multinomial and
    `generator`, stopping at "." (never part of a word) or at `max_len` characters.
    max_len < 1 is a ValueError."""
    if max_len < 1:
        raise ValueError("max_len must be at least 1")
    words = []
    for _ in range(n):
        ix, word = 0, ""
        while True:
            ix = torch.multinomial(probs[ix], 1, replacement=True, generator=generator).item()
            if ix == 0:
                break
            word += itos[ix]
            if len(word) == max_len:
                break
        words.append(word)
    return words
