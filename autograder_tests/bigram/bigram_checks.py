"""Checks shared by the bigram suite (importable by name while grading).

Each known mistake is written as a small function producing what the buggy code
would return for the same inputs; the checks name it when the student's result
matches it.
"""

import functools
import math

import torch

from grader.testing import CheckFailure, expect_equal, expect_scalar, reduction_atol


def reference_counts(reference, words, stoi) -> torch.Tensor:
    """reference.bigram_counts(words, stoi), computed once per grading process for the same
    words (the names dataset: 80 ms a call, five calls a grading, the same for every
    submission of a batch); each caller gets a copy of its own."""
    return _counts(reference.bigram_counts, tuple(words), tuple(stoi.items())).clone()


@functools.lru_cache(maxsize=8)
def _counts(bigram_counts, words: tuple, stoi_items: tuple) -> torch.Tensor:
    return bigram_counts(list(words), dict(stoi_items))


def pairs(words, stoi, start=True, end=True):
    for w in words:
        ids = [stoi[c] for c in ("." if start else "") + w + ("." if end else "")]
        yield from zip(ids, ids[1:])


def counts_from(pair_list, V):
    """(V, V) int64: N[i, j] = how many times (i, j) occurs in pair_list (one bincount: a Python
    loop of N[i, j] += 1 took 0.8 s over the names dataset, per mistake tried)."""
    flat = torch.tensor([i * V + j for i, j in pair_list], dtype=torch.int64)
    return torch.bincount(flat, minlength=V * V).view(V, V)


def counts_mistakes(words, stoi):
    V = len(stoi)
    joined = "".join(words)
    return {
        "the end-of-word token is never counted (pairs of word + '.' are missing)":
            lambda: counts_from(pairs(words, stoi, end=False), V),
        "the start-of-word token is never counted (pairs of '.' + word are missing)":
            lambda: counts_from(pairs(words, stoi, start=False), V),
        "the table is transposed: N[i, j] should count j following i":
            lambda: counts_from(pairs(words, stoi), V).T.contiguous(),
        "the words are joined without a boundary between them":
            lambda: counts_from(pairs([joined], stoi), V),
        "the counts are int32 (as in the lecture); the contract asks for int64":
            lambda: counts_from(pairs(words, stoi), V).to(torch.int32),
    }


def vocab_mistakes(words):
    chars = sorted(set("".join(words)))
    return {
        "the characters are not in sorted order":
            {".": 0} | {c: i for i, c in enumerate(dict.fromkeys("".join(words)), start=1)},
        "'.' is not given index 0 (the letters must start at 1)":
            {c: i for i, c in enumerate(chars)} | {".": len(chars)},
    }


def probs_mistakes(counts, smoothing):
    c = counts.double().cpu()
    V = c.shape[0]
    # A column summing to 0 (possible with smoothing 0) becomes uniform: the contract's rule for a
    # zero row, applied along the wrong dim, as code with this mistake does.
    col_totals = (c + smoothing).sum(0, keepdim=True)
    col = torch.where(col_totals > 0, (c + smoothing) / col_totals.clamp_min(1e-300), torch.full_like(c, 1 / V))
    late = c / c.sum(1, keepdim=True).clamp_min(1) + smoothing
    return {
        "columns are normalised instead of rows (each ROW must sum to 1)": col.float().to(counts.device),
        "smoothing is added after normalising instead of to the counts":
            (late / late.sum(1, keepdim=True)).float().to(counts.device),
        "the smoothing argument is ignored":
            torch.where(c.sum(1, keepdim=True) > 0, c / c.sum(1, keepdim=True).clamp_min(1),
                        torch.full_like(c, 1 / V)).float().to(counts.device),
    }


def log_probs(probs, pair_list) -> torch.Tensor:
    """float64 log P of each (i, j) in `pair_list`, on the CPU."""
    index = torch.tensor(list(pair_list), dtype=torch.int64).reshape(-1, 2)
    return torch.log(probs.double().cpu()[index[:, 0], index[:, 1]])


def nll_mistakes(probs, words, stoi):
    every, no_end = log_probs(probs, pairs(words, stoi)), log_probs(probs, pairs(words, stoi, end=False))
    return {
        "the log is base 10; use the natural log (torch.log)": lambda: -every.mean().item() / math.log(10),
        "the log is base 2; use the natural log (torch.log)": lambda: -every.mean().item() / math.log(2),
        "the NLL is summed, not averaged over bigrams": lambda: -every.sum().item(),
        "the result is the log-likelihood, not its negative": lambda: every.mean().item(),
        "the average is taken over words instead of over bigrams": lambda: -every.sum().item() / len(words),
        "the end-of-word bigrams are left out": lambda: -no_end.mean().item(),
    }


def expect_nll(actual, expected: float, probs: torch.Tensor, words, stoi, *, what: str) -> None:
    """expect_scalar for an NLL: a mean of n = (number of bigrams) terms -log p, accumulated in
    float32 in any order (a Python running sum one bigram at a time included).

    Tolerance: max(1e-6, reduction_atol(n, mean |log p|)) + 1e-5·|expected|. The numbers
    (names model, float32 probs):
      - held-out names: n = 28,961 bigrams, mean |log p| = 2.462, atol = 4.3e-3; a float32
        running sum is 3.1e-5 away. The named mistakes stay far outside: end-of-word bigrams
        left out 0.124 away, base 2 1.09, base 10 1.39, not negated 4.92, mean over words
        15.4, summed 7.1e4.
      - the handout's words: n = 9, mean |log p| = 0.715, atol = max(1e-6, 5.1e-7) = 1e-6;
        the nearest mistake (end-of-word bigrams left out) is 0.078 away.
    """
    logp = log_probs(probs, pairs(words, stoi))
    atol = max(1e-6, reduction_atol(logp.numel(), logp.abs().mean().item(), dtype=torch.float32))
    expect_scalar(actual, expected, what=what, atol=atol, rtol=1e-5, mistakes=nll_mistakes(probs, words, stoi))


GLOBAL_RNG = ("sample uses the global random generator instead of `generator` (two generators with "
              "the same seed gave different words), charged by 'sample takes all its randomness from "
              "the generator passed in'")


def expect_words(got, expected, *, what: str, draw, mistakes=None) -> None:
    """expect_equal for sampled words; when they differ and `draw()` (a call of sample with a freshly
    seeded generator) gives other words the second time, the feedback names the global-RNG mistake."""
    try:
        expect_equal(got, expected, what=what, mistakes=mistakes)
    except CheckFailure as failure:
        if draw() != draw():
            raise CheckFailure(f"{what}: looks like {GLOBAL_RNG}\n({failure})") from None
        raise


def expect_runs_to(words, *, n: int, length: int, alphabet: str, what: str) -> None:
    """Every one of `n` words has exactly `length` characters from `alphabet` (what a model that
    never ends a word must give, whatever the random draws)."""
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise CheckFailure(f"{what}: expected a list of str, got {words!r}"[:300])
    if len(words) != n:
        raise CheckFailure(f"{what}: expected {n} words, got {len(words)}")
    for w in words:
        if "." in w:
            raise CheckFailure(f"{what}: looks like each word still contains the boundary token '.' "
                               f"(got {w!r})")
        if set(w) - set(alphabet):
            raise CheckFailure(f"{what}: {w!r} holds characters other than {sorted(alphabet)}")
        if len(w) != length:
            hint = " (off by one: stop as soon as len(word) == max_len)" if abs(len(w) - length) == 1 else ""
            raise CheckFailure(f"{what}: every word should have {length} characters (the model never "
                               f"ends one), got {w!r} with {len(w)}{hint}")
