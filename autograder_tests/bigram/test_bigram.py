"""Hidden tests of stage `bigram` (see the contract and handout 02-bigram.md).

The known mistakes, as small functions producing what the buggy code would
return for the same inputs, are in bigram_checks.py. Each part is tested with the
reference's output of the parts before it (counts for bigram_probs, probs for nll
and sample), so a mistake is charged only where it lives.
"""

import math
from pathlib import Path

import pytest
import torch

from bigram_checks import (counts_mistakes, expect_nll, expect_runs_to, expect_words,  # this folder's helpers
                           probs_mistakes, reference_counts, vocab_mistakes)
from grader.testing import (CheckFailure, describe, expect_close, expect_equal, expect_raises, expect_scalar,
                            project_root, seeded)

HAND_WORDS = ["ab", "abb", "b"]
HERE = Path(__file__).parent


def read_names(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split()


@pytest.fixture(scope="module")
def names() -> list[str]:
    return read_names(project_root() / "datasets" / "names.txt")


@pytest.fixture(scope="module")
def heldout() -> list[str]:
    return read_names(HERE / "data" / "names_heldout.txt")


# ---- build_vocab --------------------------------------------------------------


@pytest.mark.points(2)
def test_vocab_hand(student, reference):
    """build_vocab on two short words"""
    words = ["emma", "ava"]
    stoi, itos = student.bigram.build_vocab(words)
    expected_stoi, expected_itos = reference.build_vocab(words)
    expect_equal(stoi, expected_stoi, what="build_vocab(['emma', 'ava']) stoi", mistakes=vocab_mistakes(words))
    expect_equal(student.bigram.BOUNDARY, ".", what="BOUNDARY (the constant, given in the skeleton)")
    expect_equal(itos, expected_itos, what="build_vocab(['emma', 'ava']) itos (the inverse of stoi)")


def test_vocab_names(student, reference, names):
    """build_vocab on the names dataset: 27 entries, stoi and itos inverse"""
    stoi, itos = student.bigram.build_vocab(names)
    expected_stoi, expected_itos = reference.build_vocab(names)
    expect_equal(stoi, expected_stoi, what="build_vocab(names) stoi", mistakes=vocab_mistakes(names))
    expect_equal(itos, expected_itos, what="build_vocab(names) itos")


def test_vocab_rejects_boundary(student):
    """build_vocab raises ValueError for a word containing '.'"""
    with expect_raises("ValueError", what="build_vocab(['ab', 'c.d'])"):
        student.bigram.build_vocab(["ab", "c.d"])


# ---- bigram_counts ------------------------------------------------------------

@pytest.mark.points(3)
def test_counts_hand(student, reference):
    """bigram_counts on ['ab', 'abb', 'b'] (the handout's example)"""
    stoi, _ = reference.build_vocab(HAND_WORDS)
    expected = reference.bigram_counts(HAND_WORDS, stoi)
    expect_close(student.bigram.bigram_counts(HAND_WORDS, stoi), expected,
                 what="bigram_counts(['ab', 'abb', 'b'], stoi)",
                 mistakes=counts_mistakes(HAND_WORDS, stoi))


def test_counts_repeated_and_empty(student, reference):
    """bigram_counts counts repeated words and the empty word (the pair '.', '.')"""
    words = ["", "aa", "aa", "aaa"]
    stoi = {".": 0, "a": 1, "b": 2}
    expect_close(student.bigram.bigram_counts(words, stoi), reference.bigram_counts(words, stoi),
                 what="bigram_counts(['', 'aa', 'aa', 'aaa'], stoi)",
                 mistakes=counts_mistakes(words, stoi))


def test_counts_no_words(student, reference):
    """bigram_counts of no words is an all-zero (V, V) int64 table"""
    stoi = {".": 0, "x": 1, "y": 2, "z": 3}
    expect_close(student.bigram.bigram_counts([], stoi), reference.bigram_counts([], stoi),
                 what="bigram_counts([], stoi)", mistakes=counts_mistakes([], stoi))


@pytest.mark.points(2)
def test_counts_names(student, reference, names):
    """bigram_counts on the whole names dataset"""
    stoi, _ = reference.build_vocab(names)
    expect_close(student.bigram.bigram_counts(names, stoi), reference_counts(reference, names, stoi),
                 what="bigram_counts(names, stoi)", mistakes=counts_mistakes(names, stoi))


# ---- bigram_probs -------------------------------------------------------------

@pytest.mark.points(2)
@pytest.mark.parametrize("smoothing", [1.0, 0.0, 0.5])
def test_probs_hand(student, reference, device, smoothing):
    """bigram_probs of the handout's counts with smoothing {smoothing}"""
    stoi, _ = reference.build_vocab(HAND_WORDS)
    counts = reference.bigram_counts(HAND_WORDS, stoi).to(device)
    expect_close(student.bigram.bigram_probs(counts, smoothing), reference.bigram_probs(counts, smoothing),
                 what=f"bigram_probs(counts, smoothing={smoothing})",
                 mistakes=probs_mistakes(counts, smoothing))


@pytest.mark.points(2)
def test_probs_zero_row(student, reference, device):
    """bigram_probs with smoothing 0 makes an all-zero row uniform"""
    stoi, _ = reference.build_vocab(HAND_WORDS + ["c"])   # 'c' is in the vocabulary...
    counts = reference.bigram_counts(HAND_WORDS, stoi).to(device)  # ...but never counted
    expected = reference.bigram_probs(counts, 0.0)
    zero_row = torch.where(counts.sum(1, keepdim=True) > 0, expected, torch.zeros_like(expected))
    expect_close(student.bigram.bigram_probs(counts, 0.0), expected,
                 what="bigram_probs(counts, smoothing=0) where row 'c' has no counts",
                 mistakes={"a row with no counts is left as zeros; it must be uniform (1 / V each)": zero_row}
                 | probs_mistakes(counts, 0.0))


def test_probs_names(student, reference, names, device):
    """bigram_probs of the names counts: float32 on the counts' device, rows sum to 1"""
    stoi, _ = reference.build_vocab(names)
    counts = reference_counts(reference, names, stoi).to(device)
    # Each row is normalised by a sum of V = 27 float32 terms (exact here: integer counts + 1 stay
    # below 2**24), so the elementwise float32 tolerance covers every summation order.
    expect_close(student.bigram.bigram_probs(counts, 1.0), reference.bigram_probs(counts, 1.0),
                 what="bigram_probs(names_counts, 1.0)", mistakes=probs_mistakes(counts, 1.0))


def test_probs_default_smoothing(student, reference, device):
    """bigram_probs uses smoothing 1 by default (omitted, and passed as smoothing=1.0)"""
    stoi, _ = reference.build_vocab(HAND_WORDS)
    counts = reference.bigram_counts(HAND_WORDS, stoi).to(device)
    expected = reference.bigram_probs(counts, 1.0)
    expect_close(student.bigram.bigram_probs(counts, smoothing=1.0), expected,
                 what="bigram_probs(counts, smoothing=1.0)", mistakes=probs_mistakes(counts, 1.0))
    # Smoothing 1 passed explicitly works: a smoothing-0 table now means the default is not 1.
    expect_close(student.bigram.bigram_probs(counts), expected,
                 what="bigram_probs(counts) with the default smoothing",
                 mistakes={"the default smoothing is not 1": reference.bigram_probs(counts, 0.0)})


# ---- nll ----------------------------------------------------------------------

@pytest.mark.points(3)
def test_nll_hand(student, reference, device):
    """nll of the handout's words under their own smoothed model"""
    stoi, _ = reference.build_vocab(HAND_WORDS)
    probs = reference.bigram_probs(reference.bigram_counts(HAND_WORDS, stoi), 1.0).to(device)
    expect_nll(student.bigram.nll(probs, HAND_WORDS, stoi), reference.nll(probs, HAND_WORDS, stoi),
               probs, HAND_WORDS, stoi, what="nll(probs, ['ab', 'abb', 'b'], stoi)")


@pytest.mark.points(3)
def test_nll_heldout(student, reference, names, heldout, device):
    """nll of held-out names under the model counted from the training names"""
    stoi, _ = reference.build_vocab(names)
    probs = reference.bigram_probs(reference_counts(reference, names, stoi), 1.0).to(device)
    expect_nll(student.bigram.nll(probs, heldout, stoi), reference.nll(probs, heldout, stoi),
               probs, heldout, stoi, what="nll(probs, heldout_names, stoi)")


def test_nll_returns_float(student, reference, device):
    """nll returns a Python float (not a tensor)"""
    stoi, _ = reference.build_vocab(HAND_WORDS)
    probs = reference.bigram_probs(reference.bigram_counts(HAND_WORDS, stoi), 1.0).to(device)
    value = student.bigram.nll(probs, HAND_WORDS, stoi)
    if not isinstance(value, float):
        raise CheckFailure(f"nll(probs, ['ab', 'abb', 'b'], stoi) should return a float, got {describe(value)}"
                           + (" (call .item() on the tensor)" if isinstance(value, torch.Tensor) else ""))


def test_nll_unseen_is_infinite(student, reference, device):
    """nll is infinite for a word with an unseen bigram when smoothing is 0"""
    stoi, _ = reference.build_vocab(HAND_WORDS)
    probs = reference.bigram_probs(reference.bigram_counts(HAND_WORDS, stoi), 0.0).to(device)
    value = student.bigram.nll(probs, ["ba"], stoi)
    if value == -math.inf:  # infinite; the sign is charged by the nll value tests (not negated)
        return
    expect_scalar(value, math.inf, what="nll(probs without smoothing, ['ba'], stoi)", mistakes={
        "an epsilon was added to the probabilities or they were clamped; log(0) must give inf": lambda: (
            value if isinstance(value, float) and math.isfinite(value) and value > 5 else None)})


# ---- sample -------------------------------------------------------------------

@pytest.mark.points(3)
def test_sample_hand_exact(student, reference, device):
    """sample draws exactly the contract's sequence from a seeded generator"""
    stoi, itos = reference.build_vocab(HAND_WORDS)
    probs = reference.bigram_probs(reference.bigram_counts(HAND_WORDS, stoi), 1.0).to(device)
    # max_len is passed (its default is test_sample_default_max_len's): these words can run long.
    call = lambda: student.bigram.sample(probs, itos, 12, seeded(42, device), 50)  # noqa: E731
    expected = reference.sample(probs, itos, 12, seeded(42, device), 50)
    expect_words(call(), expected, what="sample(probs, itos, 12, generator seeded 42, 50)", draw=call, mistakes={
        "each word still contains the boundary token '.'": [w + "." for w in expected],
    })


@pytest.mark.points(2)
def test_sample_names_exact(student, reference, names, device):
    """sample from the names model, twice with one generator, matches exactly"""
    stoi, itos = reference.build_vocab(names)
    probs = reference.bigram_probs(reference_counts(reference, names, stoi), 1.0).to(device)
    gen, ref_gen = seeded(2024, device), seeded(2024, device)
    for call in ("first", "second"):
        expected = reference.sample(probs, itos, 20, ref_gen, 50)
        expect_words(student.bigram.sample(probs, itos, 20, gen, 50), expected,
                     what=f"the {call} call of sample(probs, itos, 20, generator, 50) with one generator",
                     draw=lambda: student.bigram.sample(probs, itos, 20, seeded(5, device), 50),
                     mistakes={"each word still contains the boundary token '.'": [w + "." for w in expected]})


def test_sample_uses_generator(student, reference, names, device):
    """sample takes all its randomness from the generator passed in"""
    stoi, itos = reference.build_vocab(names)
    probs = reference.bigram_probs(reference_counts(reference, names, stoi), 1.0).to(device)
    first = student.bigram.sample(probs, itos, 10, seeded(7, device))
    torch.manual_seed(123)  # the grader's global RNG; the worker's is its own
    second = student.bigram.sample(probs, itos, 10, seeded(7, device))
    if first != second:
        raise CheckFailure("sample gave different words for two generators with the same seed: "
                           "it uses the global random generator instead of `generator`")


def never_ending(device):
    """A model that never ends a word (P('.') = 0 everywhere): every word runs to max_len."""
    probs = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5], [0.0, 0.5, 0.5]], device=device)
    return probs, {0: ".", 1: "a", 2: "b"}


# The max_len tests check lengths and characters only, never the draws, so a sample that draws
# differently (charged by the exact and generator tests) is not charged again here.

@pytest.mark.points(2)
@pytest.mark.parametrize("max_len", [1, 5])
def test_sample_max_len(student, device, max_len):
    """sample stops a word at max_len={max_len} characters"""
    probs, itos = never_ending(device)
    expect_runs_to(student.bigram.sample(probs, itos, 4, seeded(3, device), max_len), n=4, length=max_len,
                   alphabet="ab", what=f"sample(never-ending probs, itos, 4, generator, max_len={max_len})")


def test_sample_default_max_len(student, device):
    """sample stops a word at 50 characters by default (max_len omitted, and passed as max_len=50)"""
    probs, itos = never_ending(device)
    explicit = student.bigram.sample(probs, itos, 3, seeded(4, device), max_len=50)
    expect_runs_to(explicit, n=3, length=len(explicit[0]) if explicit and isinstance(explicit[0], str) else 50,
                   alphabet="ab", what="sample(never-ending probs, itos, 3, generator, max_len=50)")
    # The lengths max_len gives are test_sample_max_len's: the default must give what max_len=50 gives.
    expect_runs_to(student.bigram.sample(probs, itos, 3, seeded(4, device)), n=3, length=len(explicit[0]),
                   alphabet="ab", what="sample(never-ending probs, itos, 3, generator) with the default max_len "
                                       "(expected as long as with max_len=50)")


def test_sample_rejects_bad_max_len(student):
    """sample raises ValueError for max_len < 1"""
    probs = torch.full((3, 3), 1 / 3)
    for max_len in (0, -1):
        with expect_raises("ValueError", what=f"sample(probs, itos, 1, generator, max_len={max_len})"):
            student.bigram.sample(probs, {0: ".", 1: "a", 2: "b"}, 1, torch.Generator().manual_seed(0), max_len)
