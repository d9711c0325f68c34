"""Public tests of stage `tokenizer`: run them with `llmgrade check tokenizer`.

Every expected value below is one of the handout's worked examples
(01-tokenizer.md), small enough to check by hand, or GPT-2's own ids for
"Hello world". The hidden tests check much more (tiktoken's ids on all kinds of
text, with several sets of ranks, and many more training texts).
"""

import pytest

from grader.testing import CheckFailure, GPT2_PATTERN, describe, expect_equal, expect_raises

pytestmark = pytest.mark.stage("tokenizer")

BYTES = {bytes([b]): b for b in range(256)}

# train_bpe("banana bandana", ...) (handout section 4): merges, in order, from rank 256.
BANANA_260 = BYTES | {b"an": 256, b"ban": 257, b"ana": 258, b"dana": 259}
BANANA_ALL = BANANA_260 | {b"bandana": 260, b"banana": 261, b" bandana": 262}
BANANA_MISTAKES = {
    "ties go to the smallest pair; they go to the lexicographically GREATEST (left bytes, right bytes)":
        BYTES | {b"an": 256, b"ana": 257, b"ban": 258, b" ban": 259},
    "ties go to the pair seen first; they go to the lexicographically greatest (left bytes, right bytes)":
        BYTES | {b"an": 256, b"ban": 257, b"ana": 258, b"banana": 259},
    "the merges are ranked from 0; the first merge gets rank 256":
        BYTES | {b"an": 0, b"ban": 1, b"ana": 2, b"dana": 3},
}
# train_bpe("aaa bc", 1000) (handout section 4, overlapping pairs).
AAA_BC = BYTES | {b"aa": 256, b"bc": 257, b"aaa": 258, b" bc": 259}
AAA_BC_MISTAKES = {
    "pairs are counted without overlap (\"aaa\" holds the pair (a, a) twice)":
        BYTES | {b"bc": 256, b"aa": 257, b"aaa": 258, b" bc": 259},
    "pairs cross pre-token boundaries (split the text with the pattern first)":
        BYTES | {b"aa": 256, b"bc": 257, b"aaa": 258, b"aaa ": 259, b"aaa bc": 260},
}


def check_keys(ranks, what: str) -> None:
    if not isinstance(ranks, dict):
        raise CheckFailure(f"{what}: expected a dict of bytes -> int, got {describe(ranks)}")
    bad = next((k for k in ranks if not isinstance(k, bytes)), None)
    if bad is not None:
        raise CheckFailure(f"{what}: the keys must be bytes (such as b'an'), got {bad!r}")


# ---- GPT2_SPLIT_PATTERN ---------------------------------------------------------

def test_split_pattern(student):
    """GPT2_SPLIT_PATTERN splits the handout's sentence like GPT-2"""
    import regex

    pattern = student.tokenizer.GPT2_SPLIT_PATTERN
    if not isinstance(pattern, str):
        raise CheckFailure(f"GPT2_SPLIT_PATTERN should be a str, got {describe(pattern)}")
    text = "Hello world! It's  2024, they'll   go\n"
    expect_equal(regex.findall(pattern, text),
                 ["Hello", " world", "!", " It", "'s", " ", " 2024", ",", " they", "'ll", "  ", " go", "\n"],
                 what=f"regex.findall(GPT2_SPLIT_PATTERN, {text!r})")


# ---- train_bpe --------------------------------------------------------------------

def test_train_banana(student):
    """train_bpe('banana bandana', 260) learns an, ban, ana, dana"""
    ranks = student.tokenizer.train_bpe("banana bandana", 260)
    check_keys(ranks, "train_bpe('banana bandana', 260)")
    expect_equal(ranks, BANANA_260, what="train_bpe('banana bandana', 260)", mistakes=BANANA_MISTAKES)


def test_train_stops_early(student):
    """train_bpe('banana bandana', 1000) stops after 7 merges, when no pair is left"""
    ranks = student.tokenizer.train_bpe("banana bandana", 1000)
    check_keys(ranks, "train_bpe('banana bandana', 1000)")
    expect_equal(ranks, BANANA_ALL, what="train_bpe('banana bandana', 1000)")


def test_train_overlapping(student):
    """train_bpe('aaa bc', 1000) counts (a, a) twice in 'aaa'"""
    ranks = student.tokenizer.train_bpe("aaa bc", 1000)
    check_keys(ranks, "train_bpe('aaa bc', 1000)")
    expect_equal(ranks, AAA_BC, what="train_bpe('aaa bc', 1000)", mistakes=AAA_BC_MISTAKES)


def test_train_rejects_small_vocab(student):
    """train_bpe raises ValueError for vocab_size 255"""
    with expect_raises("ValueError", what="train_bpe('banana', 255)"):
        student.tokenizer.train_bpe("banana", 255)


# ---- Tokenizer ----------------------------------------------------------------------

def test_encode_banana(student):
    """Tokenizer(banana ranks).encode('bandanas') is [257, 259, 115] and decodes back"""
    tok = student.tokenizer.Tokenizer(BANANA_260)
    expect_equal(tok.encode("bandanas"), [257, 259, 115], what="Tokenizer(ranks).encode('bandanas')")
    expect_equal(tok.encode("banana bandana"), [257, 258, 32, 257, 259],
                 what="Tokenizer(ranks).encode('banana bandana')")
    expect_equal(tok.decode([257, 259, 115]), "bandanas", what="Tokenizer(ranks).decode([257, 259, 115])")
    expect_equal(tok.decode_bytes([257, 259, 115]), b"bandanas",
                 what="Tokenizer(ranks).decode_bytes([257, 259, 115])")


def test_decode_replaces_invalid_utf8(student):
    """decode([195]) is U+FFFD: half of 'é' is not valid UTF-8"""
    tok = student.tokenizer.Tokenizer(BANANA_260)
    expect_equal(tok.encode("é"), [195, 169], what="Tokenizer(ranks).encode('é')")
    expect_equal(tok.decode_bytes([195]), b"\xc3", what="Tokenizer(ranks).decode_bytes([195])")
    expect_equal(tok.decode([195]), "\ufffd", what="Tokenizer(ranks).decode([195])")


def test_gpt2_hello_world(student):
    """With GPT-2's ranks, 'Hello world<|endoftext|>' is [15496, 995, 50256]"""
    # The ranks are built where your code runs (assignments/tests/fixtures_tokenizer.py), not sent.
    tok = student.tokenizer.Tokenizer(student.fixture("gpt2_ranks"), GPT2_PATTERN, {"<|endoftext|>": 50256})
    expect_equal(tok.encode("Hello world"), [15496, 995], what="gpt2.encode('Hello world')")
    expect_equal(tok.encode("Hello world<|endoftext|>"), [15496, 995, 50256],
                 what="gpt2.encode('Hello world<|endoftext|>')")
    expect_equal(tok.decode([15496, 995, 50256]), "Hello world<|endoftext|>",
                 what="gpt2.decode([15496, 995, 50256])")
