"""Hidden tests of stage `bigram` (see the contract and handout 02-bigram.md).

Each known mistake is written next to the test that recognises it, as a small
function producing what the buggy code would return for the same inputs.
"""

import math
from pathlib import Path

import pytest
import torch

from grader.checks import expect_close, expect_equal, expect_raises, expect_scalar, CheckFailure
from grader.stages import project_root

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


def generator(device: str, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


# ---- known mistakes, as what they would produce ------------------------------

def pairs(words, stoi, start=True, end=True):
    for w in words:
        ids = [stoi[c] for c in ("." if start else "") + w + ("." if end else "")]
        yield from zip(ids, ids[1:])


def counts_from(pair_list, V):
    N = torch.zeros((V, V), dtype=torch.int64)
    for i, j in pair_list:
        N[i, j] += 1
    return N


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
    }


def probs_mistakes(counts, smoothing):
    c = counts.double().cpu()
    V = c.shape[0]
    col = (c + smoothing) / (c + smoothing).sum(0, keepdim=True)
    late = c / c.sum(1, keepdim=True).clamp_min(1) + smoothing
    return {
        "columns are normalised instead of rows (each ROW must sum to 1)": col.float().to(counts.device),
        "smoothing is added after normalising instead of to the counts":
            (late / late.sum(1, keepdim=True)).float().to(counts.device),
        "the smoothing argument is ignored":
            torch.where(c.sum(1, keepdim=True) > 0, c / c.sum(1, keepdim=True).clamp_min(1),
                        torch.full_like(c, 1 / V)).float().to(counts.device),
    }


def nll_mistakes(probs, words, stoi):
    logp = lambda ps: torch.log(probs.double().cpu()[tuple(torch.tensor(list(ps)).T)])  # noqa: E731
    every, no_end = logp(pairs(words, stoi)), logp(pairs(words, stoi, end=False))
    return {
        "the log is base 10; use the natural log (torch.log)": lambda: -every.mean().item() / math.log(10),
        "the log is base 2; use the natural log (torch.log)": lambda: -every.mean().item() / math.log(2),
        "the NLL is summed, not averaged over bigrams": lambda: -every.sum().item(),
        "the result is the log-likelihood, not its negative": lambda: every.mean().item(),
        "the average is taken over words instead of over bigrams": lambda: -every.sum().item() / len(words),
        "the end-of-word bigrams are left out": lambda: -no_end.mean().item(),
    }


# ---- build_vocab --------------------------------------------------------------

@pytest.mark.points(2)
def test_vocab_hand(student, reference):
    """build_vocab on two short words"""
    words = ["emma", "ava"]
    stoi, itos = student.bigram.build_vocab(words)
    expected_stoi, expected_itos = reference.build_vocab(words)
    insertion = {".": 0} | {c: i for i, c in enumerate(dict.fromkeys("".join(words)), start=1)}
    expect_equal(stoi, expected_stoi, what="build_vocab(['emma', 'ava']) stoi", mistakes={
        "the characters are not in sorted order": insertion,
        "'.' is not given index 0 (the letters must start at 1)":
            {c: i for i, c in enumerate(sorted(set("".join(words))))} | {".": len(set("".join(words)))},
    })
    expect_equal(itos, expected_itos, what="build_vocab(['emma', 'ava']) itos (the inverse of stoi)")


def test_vocab_names(student, reference, names):
    """build_vocab on the names dataset: 27 entries, stoi and itos inverse"""
    stoi, itos = student.bigram.build_vocab(names)
    expected_stoi, expected_itos = reference.build_vocab(names)
    expect_equal(stoi, expected_stoi, what="build_vocab(names) stoi")
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
                 what="bigram_counts([], stoi)")


@pytest.mark.points(2)
def test_counts_names(student, reference, names):
    """bigram_counts on the whole names dataset"""
    stoi, _ = reference.build_vocab(names)
    expect_close(student.bigram.bigram_counts(names, stoi), reference.bigram_counts(names, stoi),
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
                 mistakes={"a row with no counts is left as zeros; it must be uniform (1 / V each)": zero_row})


def test_probs_names(student, reference, names, device):
    """bigram_probs of the names counts: float32 on the counts' device, rows sum to 1"""
    stoi, _ = reference.build_vocab(names)
    counts = reference.bigram_counts(names, stoi).to(device)
    expect_close(student.bigram.bigram_probs(counts), reference.bigram_probs(counts),
                 what="bigram_probs(names_counts)", mistakes=probs_mistakes(counts, 1.0))


def test_probs_default_smoothing(student, reference, device):
    """bigram_probs uses smoothing 1 by default"""
    stoi, _ = reference.build_vocab(HAND_WORDS)
    counts = reference.bigram_counts(HAND_WORDS, stoi).to(device)
    expect_close(student.bigram.bigram_probs(counts), reference.bigram_probs(counts, 1.0),
                 what="bigram_probs(counts) with the default smoothing",
                 mistakes={"the default smoothing is not 1": reference.bigram_probs(counts, 0.0)})


# ---- nll ----------------------------------------------------------------------

@pytest.mark.points(3)
def test_nll_hand(student, reference, device):
    """nll of the handout's words under their own smoothed model"""
    stoi, _ = reference.build_vocab(HAND_WORDS)
    probs = reference.bigram_probs(reference.bigram_counts(HAND_WORDS, stoi), 1.0).to(device)
    expect_scalar(student.bigram.nll(probs, HAND_WORDS, stoi), reference.nll(probs, HAND_WORDS, stoi),
                  what="nll(probs, ['ab', 'abb', 'b'], stoi)",
                  mistakes=nll_mistakes(probs, HAND_WORDS, stoi))


@pytest.mark.points(3)
def test_nll_heldout(student, reference, names, heldout, device):
    """nll of held-out names under the model counted from the training names"""
    stoi, _ = reference.build_vocab(names)
    probs = reference.bigram_probs(reference.bigram_counts(names, stoi), 1.0).to(device)
    expect_scalar(student.bigram.nll(probs, heldout, stoi), reference.nll(probs, heldout, stoi),
                  what="nll(probs, heldout_names, stoi)",
                  mistakes=nll_mistakes(probs, heldout, stoi))


def test_nll_unseen_is_infinite(student, reference, device):
    """nll is infinite for a word with an unseen bigram when smoothing is 0"""
    stoi, _ = reference.build_vocab(HAND_WORDS)
    probs = reference.bigram_probs(reference.bigram_counts(HAND_WORDS, stoi), 0.0).to(device)
    value = student.bigram.nll(probs, ["ba"], stoi)
    expect_scalar(value, math.inf, what="nll(probs without smoothing, ['ba'], stoi)")


# ---- sample -------------------------------------------------------------------

@pytest.mark.points(3)
def test_sample_hand_exact(student, reference, device):
    """sample draws exactly the contract's sequence from a seeded generator"""
    stoi, itos = reference.build_vocab(HAND_WORDS)
    probs = reference.bigram_probs(reference.bigram_counts(HAND_WORDS, stoi), 1.0).to(device)
    got = student.bigram.sample(probs, itos, 12, generator(device, 42))
    expected = reference.sample(probs, itos, 12, generator(device, 42))
    expect_equal(got, expected, what="sample(probs, itos, 12, generator seeded 42)", mistakes={
        "each word still contains the boundary token '.'": [w + "." for w in expected],
    })


@pytest.mark.points(2)
def test_sample_names_exact(student, reference, names, device):
    """sample from the names model, twice with one generator, matches exactly"""
    stoi, itos = reference.build_vocab(names)
    probs = reference.bigram_probs(reference.bigram_counts(names, stoi), 1.0).to(device)
    gen, ref_gen = generator(device, 2024), generator(device, 2024)
    for call in ("first", "second"):
        expect_equal(student.bigram.sample(probs, itos, 20, gen), reference.sample(probs, itos, 20, ref_gen),
                     what=f"the {call} call of sample(probs, itos, 20, generator) with one generator")


def test_sample_uses_generator(student, reference, names, device):
    """sample takes all its randomness from the generator passed in"""
    stoi, itos = reference.build_vocab(names)
    probs = reference.bigram_probs(reference.bigram_counts(names, stoi), 1.0).to(device)
    first = student.bigram.sample(probs, itos, 10, generator(device, 7))
    torch.manual_seed(123)  # the grader's global RNG; the worker's is its own
    second = student.bigram.sample(probs, itos, 10, generator(device, 7))
    if first != second:
        raise CheckFailure("sample gave different words for two generators with the same seed: "
                           "it uses the global random generator instead of `generator`")


@pytest.mark.points(2)
@pytest.mark.parametrize("max_len", [1, 5])
def test_sample_max_len(student, reference, device, max_len):
    """sample stops a word at max_len={max_len} characters"""
    # A model that never ends a word: every word runs to max_len.
    probs = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5], [0.0, 0.5, 0.5]], device=device)
    itos = {0: ".", 1: "a", 2: "b"}
    got = student.bigram.sample(probs, itos, 4, generator(device, 3), max_len)
    expected = reference.sample(probs, itos, 4, generator(device, 3), max_len)
    expect_equal(got, expected, what=f"sample(never-ending probs, itos, 4, generator, max_len={max_len})")


def test_sample_rejects_bad_max_len(student):
    """sample raises ValueError for max_len < 1"""
    probs = torch.full((3, 3), 1 / 3)
    with expect_raises("ValueError", what="sample(probs, itos, 1, generator, max_len=0)"):
        student.bigram.sample(probs, {0: ".", 1: "a", 2: "b"}, 1, torch.Generator().manual_seed(0), 0)
