"""BUG: the most frequent pair is max(stats, key=stats.get): ties go to the pair seen first
EXPECT: ties go to the pair seen first
PART: test_train_ties

The straightforward tokenizer.py (correct/naive_recount.py) with exactly this one mistake.
"""

import regex

GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def get_stats(words):
    counts = {}
    for word in words:
        for i in range(len(word) - 1):
            pair = (word[i], word[i + 1])
            counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge_word(word, pair, new_token):
    out = []
    i = 0
    while i < len(word):
        if i < len(word) - 1 and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_token)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_bpe(text, vocab_size, pattern=GPT2_SPLIT_PATTERN):
    if vocab_size < 256:
        raise ValueError("vocab_size must be >= 256")
    ranks = {}
    for b in range(256):
        ranks[bytes([b])] = b
    words = []
    for piece in regex.findall(pattern, text):
        words.append([bytes([b]) for b in piece.encode("utf-8")])
    while len(ranks) < vocab_size:
        stats = get_stats(words)
        if len(stats) == 0:
            break
        best = max(stats, key=stats.get)
        new_token = best[0] + best[1]
        ranks[new_token] = len(ranks)
        words = [merge_word(w, best, new_token) for w in words]
    return ranks


class Tokenizer:
    def __init__(self, ranks, pattern=GPT2_SPLIT_PATTERN, special_tokens=None):
        self.ranks = ranks
        self.pattern = pattern
        self.special_tokens = special_tokens or {}
        self.inverse = {}
        for token, rank in ranks.items():
            self.inverse[rank] = token
        for s, rank in self.special_tokens.items():
            self.inverse[rank] = s.encode("utf-8")

    def bpe(self, piece):
        parts = [bytes([b]) for b in piece]
        while True:
            best_i = -1
            best_rank = None
            for i in range(len(parts) - 1):
                joined = parts[i] + parts[i + 1]
                if joined in self.ranks:
                    if best_rank is None or self.ranks[joined] < best_rank:
                        best_rank = self.ranks[joined]
                        best_i = i
            if best_i == -1:
                break
            parts = parts[:best_i] + [parts[best_i] + parts[best_i + 1]] + parts[best_i + 2:]
        return [self.ranks[p] for p in parts]

    def encode_chunk(self, text):
        ids = []
        for piece in regex.findall(self.pattern, text):
            ids.extend(self.bpe(piece.encode("utf-8")))
        return ids

    def encode(self, text):
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        ids = []
        while True:
            # the earliest special token in the rest of the text
            first = None
            for s in self.special_tokens:
                at = text.find(s)
                if at != -1 and (first is None or at < first[0]):
                    first = (at, s)
            if first is None:
                break
            at, s = first
            ids.extend(self.encode_chunk(text[:at]))
            ids.append(self.special_tokens[s])
            text = text[at + len(s):]
        ids.extend(self.encode_chunk(text))
        return ids

    def decode_bytes(self, ids):
        out = b""
        for i in ids:
            out += self.inverse[i]
        return out

    def decode(self, ids):
        return self.decode_bytes(ids).decode("utf-8", errors="replace")
