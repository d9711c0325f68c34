"""STYLE: tiktoken's possessive pattern; a trainer over word tuples with a Counter of words and
per-merge pair updates, ties by sorting; an encoder with a heap over a linked list of parts;
special tokens split with re.split.
"""

import heapq
import re
from collections import Counter

import regex

GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def _pairs(word):
    return Counter(zip(word, word[1:]))


def _merge(word, a, b):
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def train_bpe(text: str, vocab_size: int, pattern: str = GPT2_SPLIT_PATTERN) -> dict[bytes, int]:
    if vocab_size < 256:
        raise ValueError(f"vocab_size {vocab_size} < 256")
    ranks = {bytes([i]): i for i in range(256)}
    vocab = Counter(tuple(bytes([c]) for c in p.encode()) for p in regex.findall(pattern, text))
    stats = Counter()
    for word, n in vocab.items():
        for pair, k in _pairs(word).items():
            stats[pair] += k * n
    while len(ranks) < vocab_size:
        stats = +stats  # drop pairs whose count fell to zero
        if not stats:
            break
        top = max(stats.values())
        a, b = sorted(p for p, c in stats.items() if c == top)[-1]
        ranks[a + b] = len(ranks)
        updated = Counter()
        for word, n in vocab.items():
            if a in word and b in word:
                new = _merge(word, a, b)
                if new != word:
                    for pair, k in _pairs(word).items():
                        stats[pair] -= k * n
                    for pair, k in _pairs(new).items():
                        stats[pair] += k * n
                    word = new
            updated[word] += n
        vocab = updated
    return ranks


class Tokenizer:
    def __init__(self, ranks: dict[bytes, int], pattern: str = GPT2_SPLIT_PATTERN,
                 special_tokens: dict[str, int] | None = None):
        self.ranks = ranks
        self.regex = regex.compile(pattern)
        self.specials = special_tokens or {}
        self.id_to_bytes = {v: k for k, v in ranks.items()}
        self.id_to_bytes.update((v, k.encode()) for k, v in self.specials.items())
        self.splitter = (re.compile("(" + "|".join(map(re.escape, sorted(self.specials, key=len, reverse=True))) + ")")
                         if self.specials else None)

    def _bpe(self, data: bytes) -> list[int]:
        n = len(data)
        parts = [data[i:i + 1] for i in range(n)]
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = []

        def push(i):
            j = nxt[i]
            if j < n:
                r = self.ranks.get(parts[i] + parts[j])
                if r is not None:
                    heapq.heappush(heap, (r, i, parts[i], parts[j]))

        for i in range(n - 1):
            push(i)
        while heap:
            r, i, left, right = heapq.heappop(heap)
            j = nxt[i] if alive[i] else n
            if j >= n or parts[i] != left or parts[j] != right:
                continue  # stale entry
            parts[i] = left + right
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            if prv[i] >= 0:
                push(prv[i])
            push(i)
        return [self.ranks[parts[i]] for i in range(n) if alive[i]]

    def encode(self, text: str) -> list[int]:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        chunks = self.splitter.split(text) if self.splitter else [text]
        ids = []
        for k, chunk in enumerate(chunks):
            if k % 2:
                ids.append(self.specials[chunk])
            else:
                for piece in self.regex.findall(chunk):
                    ids += self._bpe(piece.encode("utf-8"))
        return ids

    def decode_bytes(self, ids: list[int]) -> bytes:
        return bytes(bytearray().join(self.id_to_bytes[i] for i in ids))

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", "replace")
