"""Hidden tests of stage `tokenizer`: the split pattern and `train_bpe` (see 01-tokenizer.md).

`train_bpe` must return exactly the reference's ranks; the known mistakes and the
comparison are in tokenizer_checks.py. Each clause is charged by its own test:
the other tests train to a vocab_size where the merges never run out (stopping
early is test_train_stops_early's) and accept ranks that differ only by a known
tie-breaking mistake (test_train_ties').
"""

from pathlib import Path

import pytest
import regex

from grader.testing import (CheckFailure, GPT2_PATTERN, describe, expect_own_code_without_banned_apis,
                            expect_raises)
from tokenizer_checks import (expect_ranks, full_size, mistaken_train, tie_variants,  # this folder's helpers
                              train_mistakes)

SAMPLE = (Path(__file__).parent / "data" / "sample.txt").read_text(encoding="utf-8")

# Texts the split pattern must cut exactly like tiktoken's gpt2 pattern.
SPLIT_TEXTS = [
    "Hello world! It's 2024; they'll say we've done what you'd've expected.",
    "I'm sure he's here, THEY'RE NOT, HE'S 'S 's 't 'Ll 'd ' ll",
    "a  b   c    \n\n\n   d \t\t e     \n",
    "   leading and trailing   ",
    "def f(x):\n    return x**2 + 1  # square\n\tprint(f\"{x=}\")",
    "3.14159 1,000,000 2024-06-01 0x1F 1e-9 123456789012345 ½ ²",
    "Résumé naïve façade Zoë Ærø déjà vu — «quotes» ‘single’",
    "東京タワーは日本の電波塔です。한국어 텍스트도 있어요. Ночью шёл снег.",
    "👍🏽 🇺🇳 👨‍👩‍👧‍👦 🤖✨ e\u0301 combining\u00a0nbsp\u3000ideographic",
    "...!!! ??? --- ___ ((( ))) @@@ ### $$$ %%% ^^^ &&& ***",
    SAMPLE,
]


def gpt2_split(text: str) -> list[str]:
    return regex.findall(GPT2_PATTERN, text)


# What patterns with a known mistake split (the first match wins in the checks below).
PATTERN_MISTAKES = {
    "runs of spaces keep their last space (the `\\s+(?!\\S)` alternative, which leaves one space "
    "to start the next word, is missing)":
        r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+""",
    "contractions are matched in uppercase too ('S is not a contraction in GPT-2's pattern)":
        r"""(?i:'(?:[sdmt]|ll|ve|re))| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "contractions ('s 't 're 've 'm 'll 'd) are not split off":
        r""" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "a word does not take the single space before it (` ?\\p{L}+`)":
        r"""'(?:[sdmt]|ll|ve|re)|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "letters are matched with [a-zA-Z] instead of \\p{L} (any letter of any script)":
        r"""'(?:[sdmt]|ll|ve|re)| ?[a-zA-Z]+| ?[0-9]+| ?[^\sa-zA-Z0-9]+|\s+(?!\S)|\s+""",
}


# ---- GPT2_SPLIT_PATTERN --------------------------------------------------------

@pytest.mark.points(3)
def test_split_pattern(student):
    """GPT2_SPLIT_PATTERN splits text exactly as tiktoken's gpt2 encoding does"""
    pattern = student.tokenizer.GPT2_SPLIT_PATTERN
    if not isinstance(pattern, str):
        raise CheckFailure(f"GPT2_SPLIT_PATTERN should be a str (a regex for the `regex` module), "
                           f"got {describe(pattern)}")
    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        raise CheckFailure(f"GPT2_SPLIT_PATTERN is not a valid regex for the `regex` module: {exc}") from None
    for text in SPLIT_TEXTS:
        try:
            got = compiled.findall(text, timeout=2.0)
        except TimeoutError:
            raise CheckFailure("regex.findall(GPT2_SPLIT_PATTERN, text) took more than 2 s") from None
        want = gpt2_split(text)
        if got != want:
            first = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
            problem = (f"regex.findall(GPT2_SPLIT_PATTERN, {text[:60]!r}{'...' if len(text) > 60 else ''}) "
                       f"differs at piece {first}: got {got[first:first + 3]}, expected {want[first:first + 3]}")
            for description, mistake in PATTERN_MISTAKES.items():
                if regex.findall(mistake, text) == got:
                    raise CheckFailure(f"looks like {description}\n({problem})")
            raise CheckFailure(problem)


# ---- train_bpe -----------------------------------------------------------------

@pytest.mark.points(3)
def test_train_hand(student, reference):
    """train_bpe('banana bandana', 260) learns the handout's four merges"""
    expected = reference.train_bpe("banana bandana", 260, GPT2_PATTERN)
    expect_ranks(student.tokenizer.train_bpe("banana bandana", 260, GPT2_PATTERN), expected,
                 what="train_bpe('banana bandana', 260)",
                 mistakes=train_mistakes("banana bandana", 260), carried=tie_variants("banana bandana", 260))


@pytest.mark.parametrize("text", ["aaa bc", "aaaa aaa", "aaaaa b aaaaa bb", "zz yy zz yy xx aaa"])
def test_train_overlaps(student, reference, text):
    """train_bpe counts overlapping pairs and merges left to right ({text!r})"""
    size = full_size(reference, text)
    expected = reference.train_bpe(text, size, GPT2_PATTERN)
    expect_ranks(student.tokenizer.train_bpe(text, size, GPT2_PATTERN), expected,
                 what=f"train_bpe({text!r}, {size})", mistakes=train_mistakes(text, size),
                 carried=tie_variants(text, size))


@pytest.mark.parametrize("text", ["ab ba ca ac bc cb", "xyz zyx yzx", "é è ê ë e"])
def test_train_ties(student, reference, text):
    """train_bpe breaks ties towards the greatest (left, right) pair ({text!r})"""
    size = full_size(reference, text)
    expected = reference.train_bpe(text, size, GPT2_PATTERN)
    expect_ranks(student.tokenizer.train_bpe(text, size, GPT2_PATTERN), expected,
                 what=f"train_bpe({text!r}, {size})", mistakes=train_mistakes(text, size))


@pytest.mark.points(4)
def test_train_sample(student, reference):
    """train_bpe on a page of varied text (prose, code, numbers, accents, CJK, emoji), 350 tokens"""
    expected = reference.train_bpe(SAMPLE, 350, GPT2_PATTERN)
    expect_ranks(student.tokenizer.train_bpe(SAMPLE, 350, GPT2_PATTERN), expected,
                 what="train_bpe(sample_text, 350)", mistakes=train_mistakes(SAMPLE, 350),
                 carried=tie_variants(SAMPLE, 350))


@pytest.mark.points(2)
def test_train_custom_pattern(student, reference):
    """train_bpe splits with the pattern it is given"""
    pattern = r"[^\s,]+|,|\s+"
    text = "so,so,so aa,bb,aa ,, bbb,so ab"
    size = full_size(reference, text, pattern)
    expected = reference.train_bpe(text, size, pattern)
    expect_ranks(student.tokenizer.train_bpe(text, size, pattern), expected,
                 what=f"train_bpe({text!r}, {size}, pattern={pattern!r})",
                 mistakes=train_mistakes(text, size, pattern), carried=tie_variants(text, size, pattern))


def test_train_default_pattern(student, reference):
    """train_bpe uses GPT2_SPLIT_PATTERN when no pattern is given (and with pattern=GPT2_SPLIT_PATTERN)"""
    text = SAMPLE[:600]
    # Error carried forward: the expectation uses the submission's own GPT2_SPLIT_PATTERN (whose
    # split is charged by test_split_pattern) when it is a usable regex.
    own = student.tokenizer.GPT2_SPLIT_PATTERN
    pattern = own if usable_pattern(own, text) else GPT2_PATTERN
    size = min(300, full_size(reference, text, pattern))
    expected = reference.train_bpe(text, size, pattern)
    mistakes = {"the default pattern is not GPT2_SPLIT_PATTERN (another pattern was used)":
                lambda: mistaken_train(text, size, GPT2_PATTERN)} if pattern != GPT2_PATTERN else {}
    mistakes |= train_mistakes(text, size, pattern)
    for call, ranks in (("", lambda: student.tokenizer.train_bpe(text, size)),
                        (", pattern=GPT2_SPLIT_PATTERN", lambda: student.tokenizer.train_bpe(text, size, pattern=own))):
        expect_ranks(ranks(), expected, what=f"train_bpe(text, {size}{call})", mistakes=mistakes,
                     carried=tie_variants(text, size, pattern))


def usable_pattern(pattern, text: str) -> bool:
    """Whether `pattern` (the submission's GPT2_SPLIT_PATTERN) is a regex that splits `text` quickly."""
    try:
        regex.findall(pattern, text, timeout=2.0)
        return isinstance(pattern, str)
    except Exception:  # noqa: BLE001 -- not a str, not a valid regex, or too slow
        return False


@pytest.mark.points(2)
def test_train_stops_early(student, reference):
    """train_bpe stops when no pair is left (and returns the 256 bytes for vocab_size 256 or no text)"""
    for text, size in [("banana bandana", 1000), ("a b c", 300), ("", 300), (SAMPLE, 256)]:
        expect_ranks(student.tokenizer.train_bpe(text, size, GPT2_PATTERN),
                     reference.train_bpe(text, size, GPT2_PATTERN),
                     what=f"train_bpe({text[:30]!r}, {size})", mistakes=train_mistakes(text, size),
                     carried=tie_variants(text, size))


def test_train_rejects_small_vocab(student):
    """train_bpe raises ValueError for vocab_size < 256"""
    for size in (255, 0):
        with expect_raises("ValueError", what=f"train_bpe('banana', {size})"):
            student.tokenizer.train_bpe("banana", size)


@pytest.mark.points(2)
def test_no_banned_apis(student, submission_dir, reference):
    """tokenizer.py and its helper modules call none of the banned APIs (tiktoken...)"""

    expect_own_code_without_banned_apis(
        [lambda: student.tokenizer.train_bpe("ab", 257),
         lambda: student.tokenizer.Tokenizer({bytes([b]): b for b in range(256)}).encode("ab")],
        submission_dir, "tokenizer", reference.BANNED_APIS, "train_bpe and Tokenizer.encode both")
