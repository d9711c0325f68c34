"""Checks shared by the tokenizer suite (importable by name while grading).

`train_bpe` must return exactly the reference's ranks. Known mistakes are written
below as a small, slow trainer with switches (`mistaken_train`), run only when a
check fails, so that the feedback can name what went wrong.
"""

from collections import Counter

import regex

from grader.testing import CheckFailure, GPT2_PATTERN, add_hint, describe

# A trainer that does not stop when no pair is left calls max() on an empty dict of pair counts.
# Python 3.11 and 3.12+ word the message differently.
NO_PAIR_LEFT = ("no pair is left to merge: train_bpe must stop early (return the ranks it has) when the "
                "pre-tokens hold no adjacent pair any more, even if len(ranks) < vocab_size (see the handout)")
add_hint(r"max\(\) arg is an empty sequence|max\(\) iterable argument is empty", NO_PAIR_LEFT,
         type_name="ValueError")


def full_size(reference, text: str, pattern: str = GPT2_PATTERN, cap: int = 100_000) -> int:
    """len(ranks) when every possible merge is made: a vocab_size at which train_bpe never runs out
    of pairs, so only the test about stopping early charges a trainer that does not stop."""
    return len(reference.train_bpe(text, cap, pattern))


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


def tie_variants(text, vocab_size, pattern=GPT2_PATTERN):
    """What the known tie-breaking mistakes learn here: charged by test_train_ties only (error carried
    forward: a test about another clause accepts ranks that differ from the reference only by them)."""
    return {tie: (lambda tie=tie: mistaken_train(text, vocab_size, pattern, tie=tie)) for tie in ("smallest", "first")}


def expect_ranks(actual, expected, *, what, mistakes=None, carried=None):
    """Fail with feedback unless `actual` == `expected` ranks. `carried` maps a name to what a mistake
    charged by another test would learn here; ranks equal to one of them pass."""
    problem = ranks_problem(actual, expected)
    if problem is None:
        return
    if isinstance(actual, dict):
        for produce in (carried or {}).values():
            try:
                if actual == produce():
                    return
            except Exception:  # noqa: BLE001 -- a variant that does not apply to these inputs
                continue
    for description, produce in (mistakes or {}).items():
        try:
            buggy = produce() if callable(produce) else produce
        except Exception:  # noqa: BLE001 -- a mistake that does not apply to these inputs
            continue
        if buggy != expected and actual == buggy:
            raise CheckFailure(f"{what}: looks like {description}\n({problem})")
    raise CheckFailure(f"{what}: {problem}")


