"""Hidden tests of stage `tokenizer`: the split pattern and `train_bpe` (see 01-tokenizer.md).

`train_bpe` must return exactly the reference's ranks. Known mistakes are
written below as a small, slow trainer with switches (`mistaken_train`), run
only when a check fails, so that the feedback can name what went wrong.
"""

from collections import Counter
from pathlib import Path

import pytest
import regex

from grader.checks import CheckFailure, describe, expect_raises
from grader.gpt2 import GPT2_PATTERN
from grader.remote import StudentCodeError

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


# ---- a slow trainer with the known mistakes as switches ------------------------

def mistaken_train(text, vocab_size, pattern=GPT2_PATTERN, *, tie="greatest", overlapping=True,
                   pretokenize=True, replace="left", first_merge_rank=256):
    words = [[bytes([b]) for b in piece.encode("utf-8")]
             for piece in (regex.findall(pattern, text, timeout=2.0) if pretokenize else [text])]
    ranks = {bytes([b]): b for b in range(256)}
    merges = 0
    while len(ranks) < vocab_size:
        counts: Counter = Counter()
        for word in words:
            i = 0
            while i < len(word) - 1:
                pair = (word[i], word[i + 1])
                counts[pair] += 1
                # Counting without overlap: "aaa" would hold (a, a) once.
                i += 2 if not overlapping and pair[0] == pair[1] and i + 2 < len(word) and word[i + 2] == pair[1] else 1
        if not counts:
            break
        top = max(counts.values())
        tied = [p for p in counts if counts[p] == top]  # in first-seen order
        best = {"greatest": max(tied), "smallest": min(tied), "first": tied[0]}[tie]
        token = best[0] + best[1]
        ranks.setdefault(token, first_merge_rank + merges)
        merges += 1
        for k, word in enumerate(words):
            words[k] = merge(word, best, token, from_right=replace == "right")
    return ranks


def merge(word, pair, token, from_right=False):
    seq = word[::-1] if from_right else word
    a, b = (pair[1], pair[0]) if from_right else pair
    out, i = [], 0
    while i < len(seq):
        if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
            out.append(token)
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return out[::-1] if from_right else out


def train_mistakes(text, vocab_size, pattern=GPT2_PATTERN):
    def variant(**switches):
        return lambda: mistaken_train(text, vocab_size, **({"pattern": pattern} | switches))
    return {
        "ties are broken towards the smallest pair; they go to the lexicographically GREATEST "
        "(left bytes, right bytes)": variant(tie="smallest"),
        "ties go to the pair seen first; they go to the lexicographically greatest "
        "(left bytes, right bytes)": variant(tie="first"),
        "pairs are counted without overlap (\"aaa\" holds the pair (a, a) twice)": variant(overlapping=False),
        "pairs cross pre-token boundaries (split the text with the pattern first and count pairs "
        "inside each pre-token)": variant(pretokenize=False),
        "the pattern argument is ignored (GPT-2's split was used)": variant(pattern=GPT2_PATTERN),
        "occurrences are replaced right to left (\"aaa\" with (a, a) becomes aa + a, left to right)":
            variant(replace="right"),
        "the merges are ranked from 0; the first merge gets rank 256, after the 256 single bytes":
            variant(first_merge_rank=0),
        "the merges are ranked from 257; the first merge gets rank 256 (len(ranks) before adding it)":
            variant(first_merge_rank=257),
    }


# ---- comparing ranks -----------------------------------------------------------

def merges_of(ranks: dict) -> list:
    return [token for token, _ in sorted(((t, r) for t, r in ranks.items() if r >= 256 or len(t) != 1),
                                         key=lambda item: item[1])]


def ranks_problem(actual, expected: dict[bytes, int]) -> str | None:
    if not isinstance(actual, dict):
        return f"expected a dict of bytes -> int, got {describe(actual)}"
    for key, value in actual.items():
        if not isinstance(key, bytes):
            return (f"the keys must be bytes (such as b'an'), got a key of type {type(key).__name__}: "
                    f"{key!r}")
        if not isinstance(value, int) or isinstance(value, bool):
            return f"the ranks must be ints, got {describe(value)} for {key!r}"
    if actual == expected:
        return None
    for b in range(256):
        if actual.get(bytes([b])) != b:
            return (f"the 256 single bytes come first with rank == byte value, but {bytes([b])!r} "
                    f"has rank {actual.get(bytes([b]))}")
    got, want = merges_of(actual), merges_of(expected)
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return (f"merge {i + 1} (rank {256 + i}) should make {w!r}, got {g!r}"
                    + (f"; the {i} merges before it agree" if i else ""))
    if len(got) != len(want):
        return (f"expected {len(want)} merges (len(ranks) == {len(expected)}), got {len(got)}"
                + (" (stop only at vocab_size or when no pair is left)" if len(got) < len(want) else ""))
    wrong = next(t for t in want if actual.get(t) != expected[t])
    return f"{wrong!r} should have rank {expected[wrong]}, got {actual.get(wrong)}"


def expect_ranks(actual, expected, *, what, mistakes=None):
    problem = ranks_problem(actual, expected)
    if problem is None:
        return
    for description, produce in (mistakes or {}).items():
        try:
            buggy = produce() if callable(produce) else produce
        except Exception:  # noqa: BLE001 -- a mistake that does not apply to these inputs
            continue
        if buggy != expected and actual == buggy:
            raise CheckFailure(f"{what}: looks like {description}\n({problem})")
    raise CheckFailure(f"{what}: {problem}")


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
                 mistakes=train_mistakes("banana bandana", 260))


@pytest.mark.parametrize("text", ["aaa bc", "aaaa aaa", "aaaaa b aaaaa bb", "zz yy zz yy xx aaa"])
def test_train_overlaps(student, reference, text):
    """train_bpe counts overlapping pairs and merges left to right ({text!r})"""
    expected = reference.train_bpe(text, 300, GPT2_PATTERN)
    expect_ranks(student.tokenizer.train_bpe(text, 300, GPT2_PATTERN), expected,
                 what=f"train_bpe({text!r}, 300)", mistakes=train_mistakes(text, 300))


@pytest.mark.parametrize("text", ["ab ba ca ac bc cb", "xyz zyx yzx", "é è ê ë e"])
def test_train_ties(student, reference, text):
    """train_bpe breaks ties towards the greatest (left, right) pair ({text!r})"""
    expected = reference.train_bpe(text, 300, GPT2_PATTERN)
    expect_ranks(student.tokenizer.train_bpe(text, 300, GPT2_PATTERN), expected,
                 what=f"train_bpe({text!r}, 300)", mistakes=train_mistakes(text, 300))


@pytest.mark.points(4)
def test_train_sample(student, reference):
    """train_bpe on a page of varied text (prose, code, numbers, accents, CJK, emoji), 350 tokens"""
    expected = reference.train_bpe(SAMPLE, 350, GPT2_PATTERN)
    expect_ranks(student.tokenizer.train_bpe(SAMPLE, 350, GPT2_PATTERN), expected,
                 what="train_bpe(sample_text, 350)", mistakes=train_mistakes(SAMPLE, 350))


@pytest.mark.points(2)
def test_train_custom_pattern(student, reference):
    """train_bpe splits with the pattern it is given"""
    pattern = r"[^\s,]+|,|\s+"
    text = "so,so,so aa,bb,aa ,, bbb,so ab"
    expected = reference.train_bpe(text, 280, pattern)
    expect_ranks(student.tokenizer.train_bpe(text, 280, pattern), expected,
                 what=f"train_bpe({text!r}, 280, pattern={pattern!r})", mistakes=train_mistakes(text, 280, pattern))


def test_train_default_pattern(student, reference):
    """train_bpe uses GPT2_SPLIT_PATTERN when no pattern is given"""
    text = SAMPLE[:600]
    expected = reference.train_bpe(text, 300)
    own = student.tokenizer.GPT2_SPLIT_PATTERN
    mistakes = {}
    if isinstance(own, str):
        mistakes["the default pattern, your GPT2_SPLIT_PATTERN, does not split like GPT-2's "
                 "(see the split pattern test)"] = lambda: mistaken_train(text, 300, own)
    expect_ranks(student.tokenizer.train_bpe(text, 300), expected, what="train_bpe(text, 300)",
                 mistakes=mistakes | train_mistakes(text, 300))


@pytest.mark.points(2)
def test_train_stops_early(student, reference):
    """train_bpe stops when no pair is left (and returns the 256 bytes for vocab_size 256 or no text)"""
    for text, size in [("banana bandana", 1000), ("a b c", 300), ("", 300), (SAMPLE, 256)]:
        expect_ranks(student.tokenizer.train_bpe(text, size, GPT2_PATTERN),
                     reference.train_bpe(text, size, GPT2_PATTERN),
                     what=f"train_bpe({text[:30]!r}, {size})")


def test_train_rejects_small_vocab(student):
    """train_bpe raises ValueError for vocab_size < 256"""
    for size in (255, 0):
        with expect_raises("ValueError", what=f"train_bpe('banana', {size})"):
            student.tokenizer.train_bpe("banana", size)


@pytest.mark.points(2)
def test_no_banned_apis(student, submission_dir, reference):
    """tokenizer.py and its helper modules call none of the banned APIs (tiktoken...)"""
    from grader.banned import expect_no_banned_apis

    # An untouched skeleton calls nothing at all: the points need some working code, that is a
    # returned value; an exception of any type counts for nothing.
    implemented = False
    for call in (lambda: student.tokenizer.train_bpe("ab", 257),
                 lambda: student.tokenizer.Tokenizer({bytes([b]): b for b in range(256)}).encode("ab")):
        try:
            call()
            implemented = True
        except StudentCodeError as exc:
            if exc.is_a("BannedAPIError"):   # refused at run time (a call the source check misses)
                raise CheckFailure(str(exc)) from None
    if not implemented:
        raise CheckFailure("neither train_bpe nor Tokenizer.encode works yet; this test gives its "
                           "points to working code that calls no banned API")
    expect_no_banned_apis(submission_dir, "tokenizer", reference.BANNED_APIS)
