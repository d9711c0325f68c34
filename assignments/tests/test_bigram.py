"""Public tests of stage `bigram`: run them with `llmgrade check bigram`.

Every expected value below is the handout's worked example (02-bigram.md,
words ["ab", "abb", "b"]), small enough to check by hand. The hidden tests
check much more (the names dataset, exact samples, every ValueError case).
"""

import math

import pytest
import torch

from grader.testing import CheckFailure, expect_close, expect_equal, expect_raises, expect_scalar, expect_type

pytestmark = pytest.mark.stage("bigram")

HAND_WORDS = ["ab", "abb", "b"]
STOI = {".": 0, "a": 1, "b": 2}
ITOS = {0: ".", 1: "a", 2: "b"}

# N[i, j] for ["ab", "abb", "b"]: rows are the current character, columns the next (handout section 3).
HAND_COUNTS = [[0, 2, 1],
               [0, 0, 2],
               [3, 0, 1]]

# bigram_probs(HAND_COUNTS, smoothing) (handout section 4).
HAND_PROBS = {
    1.0: [[1 / 6, 3 / 6, 2 / 6],
          [1 / 5, 1 / 5, 3 / 5],
          [4 / 7, 1 / 7, 2 / 7]],
    0.0: [[0.0, 2 / 3, 1 / 3],
          [0.0, 0.0, 1.0],
          [3 / 4, 0.0, 1 / 4]],
}

# What common mistakes would produce on the same inputs (handout "Common mistakes").
COUNTS_MISTAKES = {
    "the end-of-word token is never counted (wrap each word as '.' + w + '.')":
        [[0, 2, 1], [0, 0, 2], [0, 0, 1]],
    "the start-of-word token is never counted (wrap each word as '.' + w + '.')":
        [[0, 0, 0], [0, 0, 2], [3, 0, 1]],
    "the table is transposed: the row is the current character, the column the next one":
        [[0, 0, 3], [2, 0, 0], [1, 2, 1]],
    "the words are joined without a boundary between them":
        [[0, 1, 0], [0, 0, 2], [1, 1, 2]],
}
PROBS_MISTAKES = {
    1.0: {"columns are normalised instead of rows (each ROW must sum to 1)":
          [[1 / 6, 3 / 5, 2 / 7], [1 / 6, 1 / 5, 3 / 7], [4 / 6, 1 / 5, 2 / 7]],
          "the smoothing argument is ignored": HAND_PROBS[0.0]},
    0.0: {"columns are normalised instead of rows (each ROW must sum to 1)":
          [[0.0, 1.0, 1 / 4], [0.0, 0.0, 1 / 2], [1.0, 0.0, 1 / 4]]},
}

# nll(probs with smoothing 1, HAND_WORDS, STOI) = 6.4382 / 9 (handout section 5).
HAND_NLL = 0.715352
NLL_MISTAKES = {
    "the log is base 10; use the natural log (torch.log)": 0.310673,
    "the log is base 2; use the natural log (torch.log)": 1.032035,
    "the NLL is summed, not averaged over the 9 bigrams": 6.438168,
    "the average is taken over the 3 words instead of over the 9 bigrams": 2.146056,
    "the result is the log-likelihood, not its negative": -0.715352,
}


def hand_probs(smoothing: float, device: str) -> torch.Tensor:
    return torch.tensor(HAND_PROBS[smoothing], dtype=torch.float32, device=device)


def generator(device: str, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


# ---- build_vocab --------------------------------------------------------------

def test_vocab_hand(student):
    """build_vocab on ['ab', 'abb', 'b'] and on letters given out of order"""
    stoi, itos = student.bigram.build_vocab(HAND_WORDS)
    expect_equal(stoi, STOI, what="build_vocab(['ab', 'abb', 'b']) stoi", mistakes={
        "'.' is not given index 0 (the letters must start at 1)": {"a": 0, "b": 1, ".": 2},
    })
    expect_equal(itos, ITOS, what="build_vocab(['ab', 'abb', 'b']) itos (the inverse of stoi)")
    stoi, _ = student.bigram.build_vocab(["ca", "b"])
    expect_equal(stoi, {".": 0, "a": 1, "b": 2, "c": 3}, what="build_vocab(['ca', 'b']) stoi", mistakes={
        "the characters are not in sorted order": {".": 0, "c": 1, "a": 2, "b": 3},
    })


def test_vocab_rejects_boundary(student):
    """build_vocab raises ValueError for a word containing '.'"""
    with expect_raises("ValueError", what="build_vocab(['ab', 'c.d'])"):
        student.bigram.build_vocab(["ab", "c.d"])


# ---- bigram_counts ------------------------------------------------------------

def test_counts_hand(student):
    """bigram_counts on ['ab', 'abb', 'b'] (the handout's table)"""
    expect_close(student.bigram.bigram_counts(HAND_WORDS, STOI), torch.tensor(HAND_COUNTS),
                 what="bigram_counts(['ab', 'abb', 'b'], stoi)",
                 mistakes={d: torch.tensor(c) for d, c in COUNTS_MISTAKES.items()})


# ---- bigram_probs -------------------------------------------------------------

@pytest.mark.parametrize("smoothing", [1.0, 0.0])
def test_probs_hand(student, device, smoothing):
    """bigram_probs of the handout's counts with smoothing {smoothing}"""
    counts = torch.tensor(HAND_COUNTS, device=device)
    expect_close(student.bigram.bigram_probs(counts, smoothing), hand_probs(smoothing, device),
                 what=f"bigram_probs(counts, smoothing={smoothing})",
                 mistakes={d: torch.tensor(p, dtype=torch.float32, device=device)
                           for d, p in PROBS_MISTAKES[smoothing].items()})


def test_probs_zero_row(student, device):
    """bigram_probs with smoothing 0 makes an all-zero row uniform"""
    # Vocabulary of ["ab", "abb", "b", "c"], counts of ["ab", "abb", "b"]: row 'c' is never counted.
    counts = torch.tensor([[0, 2, 1, 0],
                           [0, 0, 2, 0],
                           [3, 0, 1, 0],
                           [0, 0, 0, 0]], device=device)
    expected = torch.tensor([[0.0, 2 / 3, 1 / 3, 0.0],
                             [0.0, 0.0, 1.0, 0.0],
                             [3 / 4, 0.0, 1 / 4, 0.0],
                             [1 / 4, 1 / 4, 1 / 4, 1 / 4]], device=device)
    left_zero = expected.clone()
    left_zero[3] = 0.0
    expect_close(student.bigram.bigram_probs(counts, 0.0), expected,
                 what="bigram_probs(counts, smoothing=0) where row 'c' has no counts",
                 mistakes={"a row with no counts is left as zeros; it must be uniform (1 / V each)": left_zero})


# ---- nll ----------------------------------------------------------------------

def test_nll_hand(student, device):
    """nll of ['ab', 'abb', 'b'] under their smoothed model is about 0.7154"""
    value = student.bigram.nll(hand_probs(1.0, device), HAND_WORDS, STOI)
    expect_scalar(value, HAND_NLL, atol=1e-4, rtol=0.0,
                  what="nll(probs with smoothing 1, ['ab', 'abb', 'b'], stoi)", mistakes=NLL_MISTAKES)


def test_nll_unseen_is_infinite(student, device):
    """nll is infinite for a word with an unseen bigram when smoothing is 0"""
    value = student.bigram.nll(hand_probs(0.0, device), ["ba"], STOI)
    expect_scalar(value, math.inf, what="nll(probs without smoothing, ['ba'], stoi) ('b' -> 'a' has P = 0)")


# ---- sample -------------------------------------------------------------------

def check_words(words, n: int, max_len: int, what: str, exact_len: bool = False) -> None:
    expect_type(words, list, what=what)
    if len(words) != n:
        raise CheckFailure(f"{what}: expected {n} words, got {len(words)}")
    for i, word in enumerate(words):
        if not isinstance(word, str):
            raise CheckFailure(f"{what}: word {i} should be a str, got a {type(word).__name__}")
        if "." in word:
            raise CheckFailure(f"{what}: word {i} is {word!r}; the boundary '.' is never part of a word")
        if set(word) - {"a", "b"}:
            raise CheckFailure(f"{what}: word {i} is {word!r}; only 'a' and 'b' can be drawn")
        if len(word) > max_len:
            raise CheckFailure(f"{what}: word {i} is {word!r}, longer than max_len={max_len}")
        if exact_len and len(word) != max_len:
            raise CheckFailure(f"{what}: word {i} is {word!r}; this model never draws '.', "
                               f"so every word must stop at exactly max_len={max_len} characters")


def test_sample_words(student, device):
    """sample returns n words of 'a' and 'b', without '.', at most max_len long"""
    words = student.bigram.sample(hand_probs(1.0, device), ITOS, 20, generator(device, 0), 3)
    check_words(words, 20, 3, "sample(probs, itos, 20, generator, max_len=3)")
    # A model that never ends a word: every word must run to max_len.
    never_ends = torch.tensor([[0.0, 0.5, 0.5]] * 3, device=device)
    words = student.bigram.sample(never_ends, ITOS, 4, generator(device, 1), 3)
    check_words(words, 4, 3, "sample(probs that never pick '.', itos, 4, generator, max_len=3)",
                exact_len=True)


def test_sample_reproducible(student, device):
    """sample gives the same words for two generators with the same seed"""
    probs = hand_probs(1.0, device)
    first = student.bigram.sample(probs, ITOS, 20, generator(device, 42))
    second = student.bigram.sample(probs, ITOS, 20, generator(device, 42))
    check_words(first, 20, 50, "sample(probs, itos, 20, generator seeded 42)")
    if first != second:
        raise CheckFailure("sample(probs, itos, 20, generator seeded 42) gave different words for two "
                           "generators with the same seed: draw every index with "
                           "torch.multinomial(..., generator=generator), never with the global RNG\n"
                           f"(first call {first[:5]}..., second call {second[:5]}...)")


def test_sample_rejects_bad_max_len(student):
    """sample raises ValueError for max_len 0"""
    with expect_raises("ValueError", what="sample(probs, itos, 1, generator, max_len=0)"):
        student.bigram.sample(hand_probs(1.0, "cpu"), ITOS, 1, generator("cpu", 0), 0)
