"""The names dataset: what the handout and the hidden suite rely on."""

import hashlib
import re

from grader.stages import project_root

ROOT = project_root()
NAMES = ROOT / "datasets" / "names.txt"
HELDOUT = ROOT / "autograder_tests" / "bigram" / "data" / "names_heldout.txt"


def lines(path):
    text = path.read_text(encoding="ascii")
    assert text.endswith("\n") and "\r" not in text
    return text.splitlines()


def test_names_are_about_30000_distinct_lowercase_words():
    names = lines(NAMES)
    assert 28_000 <= len(names) <= 32_000
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z]+", n) for n in names)
    assert len(set("".join(names))) == 26


def test_heldout_split_is_disjoint_and_same_format():
    names, heldout = set(lines(NAMES)), lines(HELDOUT)
    assert 1_000 <= len(heldout) and not names & set(heldout)
    assert all(re.fullmatch(r"[a-z]+", n) for n in heldout)


def test_files_are_those_the_build_script_recorded():
    readme = (ROOT / "datasets" / "README.md").read_text()
    for path in (NAMES, HELDOUT):
        assert hashlib.sha256(path.read_bytes()).hexdigest() in readme, f"{path.name} changed without the README"
