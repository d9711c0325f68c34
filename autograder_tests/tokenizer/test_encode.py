"""Hidden tests of stage `tokenizer`: `Tokenizer.encode`, `decode`, `decode_bytes`.

Every expected id list comes from tiktoken itself, given the same ranks,
pattern and special tokens (`tiktoken.Encoding(...).encode(text,
allowed_special="all")`), for three kinds of ranks: trained by the reference on
a small text (so the encoder is tested apart from the student's trainer), the
student's own trained ranks, and GPT-2's real 50,256 ranks.
"""

from pathlib import Path

import pytest
import regex
import tiktoken

from grader.testing import (CheckFailure, GPT2_PATTERN, GPT2_SPECIAL_TOKENS, StudentCodeError, describe,
                            expect_equal, gpt2_encoding, gpt2_ranks, load_reference)

SAMPLE = (Path(__file__).parent / "data" / "sample.txt").read_text(encoding="utf-8")
EOT = "<|endoftext|>"

TEXTS = [
    "Hello world",
    "It's what they'll say: we're sure you've seen it, I'm done, he'd go, she's 'd 'll.",
    "SHOUTING: IT'S HE'S THEY'LL WE'D 'S 'T 'Re",
    "def f(x):\n    return x**2 + 1  # square\n\tif x != 0: print(f\"{x=}\")\n",
    "3.14159 1,000,000 2024-06-01 0x1F 1e-9 123456789012345 007",
    "a  b   c    \n\n\n   d \t\t e     ",
    "   leading spaces", "trailing spaces   ", "\n", " ", "", "  \n  \n",
    "Résumé naïve façade Zoë Ærø déjà vu, crème brûlée",
    "東京タワーは日本の電波塔です。한국어 텍스트도 있어요. Ночью шёл снег.",
    "👍🏽 🇺🇳 👨‍👩‍👧‍👦 🤖✨ e\u0301 (combining accent) \u00a0nbsp \u3000ideographic",
    "Ελληνικά, עברית, العربية, हिन्दी",
    "...!!! ??? --- ___ ((( ))) @@@ ### $$$ %%% ^^^ &&& *** <|endof text|> <|endoftext|",
    SAMPLE,
]
SPECIAL_TEXTS = [
    EOT, f"a{EOT}b", f"Hello{EOT}{EOT} world", f"The end. {EOT}\n\nA new document", f"  {EOT}  ",
    f"{EOT}It's {EOT} 3.14 {EOT}", f"<|endoftext|{EOT}|>",
]
# Surrogates cannot be UTF-8 encoded; tiktoken sends them through UTF-16 with errors="replace":
# a lone one becomes U+FFFD, a pair written as two code points becomes its character.
SURROGATE_TEXTS = ["\ud800", "a\udfffb", "café \ud83d x", "pair: \ud83d\ude00!", "\udc00\ud800 end"]


def short(text: str) -> str:
    return repr(text) if len(text) <= 50 else repr(text[:50]) + "..."


def tiktoken_encoding(ranks, pattern=GPT2_PATTERN, special_tokens=None) -> tiktoken.Encoding:
    if ranks is gpt2_ranks() and pattern == GPT2_PATTERN and special_tokens == GPT2_SPECIAL_TOKENS:
        return gpt2_encoding()
    return tiktoken.Encoding(name="x", pat_str=pattern, mergeable_ranks=ranks,
                             special_tokens=dict(special_tokens or {}))


def tiktoken_encode(ranks, text, pattern=GPT2_PATTERN, special_tokens=None) -> list[int]:
    return tiktoken_encoding(ranks, pattern, special_tokens).encode(text, allowed_special="all")


@pytest.fixture(scope="module")
def trained_ranks() -> dict[bytes, int]:
    """Ranks trained by the reference on the sample text (independent of the student's trainer)."""
    return load_reference("tokenizer").train_bpe(SAMPLE, 400)


# ---- known encoder mistakes, as what they would produce --------------------------

def lowest_rank_bpe(ranks, data: bytes, rightmost=False) -> list[int]:
    parts = [data[i:i + 1] for i in range(len(data))]
    while len(parts) > 1:
        found = [(ranks[parts[i] + parts[i + 1]], -i if rightmost else i)
                 for i in range(len(parts) - 1) if parts[i] + parts[i + 1] in ranks]
        if not found:
            break
        i = abs(min(found)[1])
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]


def replay_bpe(ranks, data: bytes) -> list[int]:
    """Applies every merge in rank order, each to the whole sequence (training's order)."""
    parts = [data[i:i + 1] for i in range(len(data))]
    inside = {data[i:j] for i in range(len(data)) for j in range(i + 2, len(data) + 1)} & ranks.keys()
    for token in sorted(inside, key=ranks.get):
        out, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and parts[i] + parts[i + 1] == token:
                out.append(token)
                i += 2
            else:
                out.append(parts[i])
                i += 1
        parts = out
    return [ranks[p] for p in parts]


def python_encode(ranks, text, pattern, specials, bpe):
    """Encodes like tiktoken, but with `bpe` doing the merges inside each pre-token."""
    parts = regex.split("(" + "|".join(map(regex.escape, specials)) + ")", text) if specials else [text]
    ids = []
    for k, part in enumerate(parts):
        if k % 2:
            ids.append(specials[part])
        else:
            ids += [i for piece in regex.findall(pattern, part) for i in bpe(ranks, piece.encode("utf-8"))]
    return ids


def encode_mistakes(ranks, text, pattern=GPT2_PATTERN, special_tokens=None):
    specials = dict(special_tokens or {})
    return {
        "the text is not split into pre-tokens first (merges cross word boundaries)":
            lambda: tiktoken_encode(ranks, text, r"[\s\S]+", specials),
        "merges are replayed in training order; encode must repeatedly merge the adjacent pair "
        "whose joined bytes have the LOWEST rank":
            lambda: python_encode(ranks, text, pattern, specials, replay_bpe),
        "of two adjacent pairs with the same rank the rightmost is merged; merge the leftmost":
            lambda: python_encode(ranks, text, pattern, specials,
                                  lambda r, d: lowest_rank_bpe(r, d, rightmost=True)),
        "special tokens are not recognised (split the text on them first and emit their ids)":
            lambda: tiktoken_encode(ranks, text, pattern, {}),
        "the pattern argument is ignored (GPT-2's split was used)":
            lambda: tiktoken_encode(ranks, text, GPT2_PATTERN, specials),
    }


def expect_encodes(tokenizer, ranks, texts, *, pattern=GPT2_PATTERN, special_tokens=None, label="tok",
                   first_mistakes=None):
    encoding = tiktoken_encoding(ranks, pattern, special_tokens)
    for text in texts:
        expected = encoding.encode(text, allowed_special="all")
        mistakes = {description: (lambda produce=produce, text=text: produce(text))
                    for description, produce in (first_mistakes or {}).items()}
        mistakes |= encode_mistakes(ranks, text, pattern, special_tokens)
        if any("\ud800" <= ch <= "\udfff" for ch in text):
            mistakes = {
                "a surrogate was turned into '?' (str.encode with errors='replace'); tiktoken sends the "
                "text through UTF-16 first: text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')":
                    lambda: tiktoken_encode(ranks, text.encode("utf-8", "replace").decode("utf-8"),
                                            pattern, special_tokens),
                "surrogates were dropped (errors='ignore'); tiktoken turns a lone one into U+FFFD":
                    lambda: tiktoken_encode(ranks, text.encode("utf-8", "ignore").decode("utf-8"),
                                            pattern, special_tokens),
            }
        expect_equal(tokenizer.encode(text), expected, what=f"{label}.encode({short(text)})",
                     mistakes=mistakes)


@pytest.fixture(scope="module")
def gpt2_cache() -> dict:
    return {}


@pytest.fixture
def gpt2_tokenizer(student, gpt2_cache):
    """The student's Tokenizer with GPT-2's ranks, pattern and <|endoftext|>.

    The ranks are the stage's fixture (assignments/tests/fixtures_tokenizer.py): the worker
    holds them before the submission is imported, so none of the 50,256 cross over (that took
    a second). One remote tokenizer serves every test while its worker lives; after a crash or
    timeout it is built again.
    """
    tok = gpt2_cache.get("tokenizer")
    if tok is not None:
        try:
            tok.decode_bytes([])  # raises when the worker that held it is gone
            return tok
        except StudentCodeError:
            pass
    with student.timeout(20):  # an __init__ may index the 50k ranks
        tok = student.tokenizer.Tokenizer(student.fixture("gpt2_ranks"), GPT2_PATTERN, dict(GPT2_SPECIAL_TOKENS))
    gpt2_cache["tokenizer"] = tok
    return tok


# ---- encode ----------------------------------------------------------------------

@pytest.mark.points(4)
def test_encode_trained_ranks(student, trained_ranks):
    """encode with ranks trained on a small text equals tiktoken's encode"""
    tok = student.tokenizer.Tokenizer(trained_ranks, GPT2_PATTERN)
    expect_encodes(tok, trained_ranks, TEXTS, label="Tokenizer(trained_ranks, GPT2_PATTERN)")


def unusable(ranks) -> str | None:
    """Why `ranks` cannot be given to tiktoken, or None."""
    if not isinstance(ranks, dict):
        return f"expected a dict, got {describe(ranks)}"
    for token, rank in ranks.items():
        if not isinstance(token, bytes) or not token:
            return f"every key must be a non-empty bytes, got {token!r}"
        if type(rank) is not int or not 0 <= rank < 2**31:
            return f"every rank must be an int >= 0, got {rank!r} for {token!r}"
    missing = next((bytes([b]) for b in range(256) if bytes([b]) not in ranks), None)
    if missing is not None:
        return f"the single byte {missing!r} is missing"
    if len(set(ranks.values())) != len(ranks):
        return "two tokens have the same rank"
    return None


@pytest.mark.points(2)
def test_encode_own_ranks(student):
    """encode with the submission's own train_bpe ranks equals tiktoken's encode"""
    # Error carried forward: ranks that tiktoken cannot use (str keys, ranks that collide, a
    # crash: train_bpe's mistakes, charged by the train_bpe tests) are replaced by the
    # reference's, so this test charges only the encoder.
    try:
        ranks = student.tokenizer.train_bpe(SAMPLE, 330, GPT2_PATTERN)
    except StudentCodeError as exc:
        if exc.type_name is None or exc.is_a("NotImplementedError"):
            raise
        ranks = None
    if ranks is None or unusable(ranks):
        ranks = load_reference("tokenizer").train_bpe(SAMPLE, 330, GPT2_PATTERN)
    tok = student.tokenizer.Tokenizer(ranks, GPT2_PATTERN)
    expect_encodes(tok, ranks, TEXTS[:8] + [SAMPLE], label="Tokenizer(your_ranks, GPT2_PATTERN)")


@pytest.mark.points(4)
def test_encode_gpt2(gpt2_tokenizer):
    """encode with GPT-2's ranks equals tiktoken's gpt2 encoding (prose, code, numbers, spaces, scripts, emoji)"""
    expect_encodes(gpt2_tokenizer, gpt2_ranks(), TEXTS, special_tokens=GPT2_SPECIAL_TOKENS, label="gpt2")


@pytest.mark.points(2)
def test_encode_special_tokens(gpt2_tokenizer):
    """encode turns each <|endoftext|> in the text into its id, 50256"""
    expect_encodes(gpt2_tokenizer, gpt2_ranks(), SPECIAL_TEXTS, special_tokens=GPT2_SPECIAL_TOKENS,
                   label="gpt2")


def test_encode_surrogates(gpt2_tokenizer):
    """encode handles surrogates (not UTF-8 encodable) as tiktoken does"""
    expect_encodes(gpt2_tokenizer, gpt2_ranks(), SURROGATE_TEXTS, special_tokens=GPT2_SPECIAL_TOKENS,
                   label="gpt2")


@pytest.mark.points(2)
def test_encode_lowest_rank_first(student):
    """encode merges the lowest-ranked adjacent pair first, the leftmost among equals"""
    # b'cd' is ranked after b'abcd': encode reaches [ab, cd] and must still merge it into
    # b'abcd', which replaying the merges in rank order never does.
    ranks = {bytes([b]): b for b in range(256)} | {b"ab": 256, b"bc": 257, b"bcd": 258, b"abcd": 259,
                                                   b"cd": 260, b"aa": 261}
    tok = student.tokenizer.Tokenizer(ranks, r"\S+|\s+")
    expect_encodes(tok, ranks, ["abcde", "xabcd abcdx", "aaa", "aaaaa", "aaab aacd"], pattern=r"\S+|\s+",
                   label="Tokenizer(hand_ranks, r'\\S+|\\s+')")


def test_encode_custom_pattern(student, reference):
    """encode splits with the pattern it is given"""
    pattern = r"[^\s,]+|,|\s+"
    ranks = reference.train_bpe(SAMPLE, 330, pattern)
    tok = student.tokenizer.Tokenizer(ranks, pattern)
    expect_encodes(tok, ranks, TEXTS[:5], pattern=pattern, label=f"Tokenizer(ranks, {pattern!r})")


def own_pattern(student) -> str:
    """The submission's GPT2_SPLIT_PATTERN when tiktoken can use it, else GPT-2's: the expectation for a
    default pattern (error carried forward: its split is charged by test_split_pattern)."""
    own = student.tokenizer.GPT2_SPLIT_PATTERN
    try:
        if isinstance(own, str):
            regex.findall(own, "".join(TEXTS[:6]), timeout=2.0)
            tiktoken_encoding({bytes([b]): b for b in range(256)}, own).encode("probe it's 12 !")
            return own
    except BaseException as exc:  # noqa: BLE001 -- not usable (tiktoken's panics are BaseExceptions)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
    return GPT2_PATTERN


def test_encode_default_pattern(student, trained_ranks):
    """Tokenizer(ranks) splits with GPT2_SPLIT_PATTERN by default"""
    tok = student.tokenizer.Tokenizer(trained_ranks)
    pattern = own_pattern(student)
    first = {}
    if pattern != GPT2_PATTERN:
        first["the default pattern is not GPT2_SPLIT_PATTERN (GPT-2's was used)"] = \
            lambda text: tiktoken_encode(trained_ranks, text, GPT2_PATTERN)
    expect_encodes(tok, trained_ranks, TEXTS[:6], pattern=pattern, label="Tokenizer(trained_ranks)",
                   first_mistakes=first)


def test_encode_explicit_defaults(student, trained_ranks):
    """Tokenizer(ranks, pattern=GPT2_SPLIT_PATTERN, special_tokens=None) encodes '<|endoftext|>' as text"""
    pattern = own_pattern(student)
    try:
        tok = student.tokenizer.Tokenizer(trained_ranks, pattern=student.tokenizer.GPT2_SPLIT_PATTERN,
                                          special_tokens=None)
    except StudentCodeError as exc:
        if exc.type_name is None or exc.is_a("NotImplementedError"):
            raise
        raise CheckFailure(f"Tokenizer(ranks, pattern=GPT2_SPLIT_PATTERN, special_tokens=None) raised "
                           f"{exc.type_name}: passing the documented defaults explicitly must work "
                           "(special_tokens=None means no special tokens)\n" + str(exc)) from None
    expect_encodes(tok, trained_ranks, TEXTS[:3] + SPECIAL_TEXTS[:3], pattern=pattern,
                   label="Tokenizer(trained_ranks, pattern=GPT2_SPLIT_PATTERN, special_tokens=None)")


# ---- decode ----------------------------------------------------------------------

def decode(tokenizer, ids, what):
    try:
        return tokenizer.decode(ids)
    except StudentCodeError as exc:
        if exc.is_a("UnicodeDecodeError"):
            raise CheckFailure(f"{what} raised UnicodeDecodeError: looks like bytes.decode with "
                               "errors='strict'; invalid UTF-8 must become U+FFFD (errors='replace')") from None
        raise


@pytest.mark.points(2)
def test_decode_roundtrip(gpt2_tokenizer):
    """decode(encode(text)) == text, special tokens included"""
    for text in TEXTS + SPECIAL_TEXTS:
        ids = gpt2_encoding().encode(text, allowed_special="all")
        expect_equal(decode(gpt2_tokenizer, ids, f"gpt2.decode(ids of {short(text)})"), text,
                     what=f"gpt2.decode(ids of {short(text)})")


def test_decode_bytes(gpt2_tokenizer):
    """decode_bytes returns the tokens' bytes joined, even when they cut a character"""
    enc = gpt2_encoding()
    for ids in ([15496, 995], enc.encode("naïve 東京 👍🏽")[:-1], [50256, 198], []):
        expected = enc.decode_bytes(ids)
        expect_equal(gpt2_tokenizer.decode_bytes(ids), expected, what=f"gpt2.decode_bytes({ids})",
                     mistakes={"the bytes were decoded to a str; decode_bytes returns bytes":
                               expected.decode("utf-8", "replace")})


@pytest.mark.points(2)
def test_decode_replaces_invalid_utf8(gpt2_tokenizer):
    """decode of ids that cut a multi-byte character gives U+FFFD"""
    enc = gpt2_encoding()
    for text in ("東京 tower", "emoji 👍🏽!", "é"):
        ids = enc.encode(text)
        for cut in (ids[:1], ids[1:], ids[:-1]):
            raw = enc.decode_bytes(cut)
            what = f"gpt2.decode({cut}) (the bytes {raw!r})"
            expect_equal(decode(gpt2_tokenizer, cut, what), enc.decode(cut), what=what, mistakes={
                "bytes that are not valid UTF-8 are dropped (errors='ignore'); they must become "
                "U+FFFD (errors='replace')": raw.decode("utf-8", "ignore"),
                "the bytes were decoded as Latin-1; decode UTF-8 with errors='replace'": raw.decode("latin-1"),
            })
