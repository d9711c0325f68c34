"""The names dataset: what the handout and the hidden suite rely on."""

import hashlib
import re

from grader.course.stages import project_root

ROOT = project_root()
NAMES = ROOT / "datasets" / "names.txt"
HELDOUT = ROOT / "autograder_tests" / "bigram" / "data" / "names_heldout.txt"
SHAKESPEARE = ROOT / "datasets" / "shakespeare.txt"
HIDDEN_PLAYS = [ROOT / "autograder_tests" / "training" / "data" / f"shakespeare_{split}.txt"
                for split in ("train", "val")]


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
    for path in (NAMES, HELDOUT, SHAKESPEARE, *HIDDEN_PLAYS):
        assert hashlib.sha256(path.read_bytes()).hexdigest() in readme, f"{path.name} changed without the README"


def test_shakespeare_is_about_a_megabyte_of_plays_and_the_hidden_splits_are_other_plays():
    student = SHAKESPEARE.read_text(encoding="ascii")
    assert 900_000 <= len(student) <= 1_200_000 and "MACBETH" in student
    for path in HIDDEN_PLAYS:
        hidden = path.read_text(encoding="ascii")
        assert len(hidden) >= 100_000
        # whole plays the students never get: no long passage is shared
        lines = [line for line in hidden.splitlines() if len(line) > 60]
        assert sum(line in student for line in lines[:500]) < 25
