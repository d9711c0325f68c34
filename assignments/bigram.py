# Your file for this stage: replace each NotImplementedError with your code.
"""Stage 2 — a bigram character model: count, normalise, score, sample.

Every word is read as "." + word + ".": the boundary token "." (index 0)
starts and ends each word, so the model also learns how words begin and end.
See assignments/handouts/02-bigram.md.
"""

import torch

BOUNDARY = "."  # start and end of a word; index 0


def build_vocab(words: list[str]) -> tuple[dict[str, int], dict[int, str]]:
    """Map "." to 0 and every distinct character of `words`, in sorted order, to 1..V-1.

    Returns (stoi, itos), inverse dicts. A word containing "." is a ValueError.
    """
    # TODO: your code here
    raise NotImplementedError


def bigram_counts(words: list[str], stoi: dict[str, int]) -> torch.Tensor:
    """(V, V) int64 counts: N[i, j] = how often character j follows character i
    over all "." + w + "." (V = len(stoi))."""
    # TODO: your code here
    raise NotImplementedError


def bigram_probs(counts: torch.Tensor, smoothing: float = 1.0) -> torch.Tensor:
    """(V, V) float32 on the device of `counts`: row i = (counts[i] + smoothing) / its sum.

    A row that sums to 0 (possible with smoothing 0) becomes uniform, 1 / V each.
    """
    # TODO: your code here
    raise NotImplementedError


def nll(probs: torch.Tensor, words: list[str], stoi: dict[str, int]) -> float:
    """Mean negative log-likelihood (natural log) of every bigram of "." + w + "."
    under `probs`; infinite when a bigram has probability 0."""
    # TODO: your code here
    raise NotImplementedError


def sample(probs: torch.Tensor, itos: dict[int, str], n: int,
           generator: torch.Generator, max_len: int = 50) -> list[str]:
    """Draw `n` words, each character from probs[previous] with torch.multinomial and
    `generator`, stopping at "." (never part of a word) or at `max_len` characters.
    max_len < 1 is a ValueError."""
    # TODO: your code here
    raise NotImplementedError
