"""The hidden suites are proved on the corpus: every bug loses points, every correct style gets full marks."""

from pathlib import Path

import pytest
import torch

from grader import corpus
from grader.grade import GradeOptions

CORPUS = Path(__file__).parent / "corpus"
ENTRIES = corpus.entries(CORPUS)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_corpus_entry(entry):
    if entry.requires == "cuda" and not torch.cuda.is_available():
        pytest.skip("this bug only shows on a GPU (a result left on the CPU); no CUDA here")
    verdict = corpus.judge(entry, GradeOptions(call_timeout=10.0))
    assert verdict.ok, f"{entry.name}: {verdict.score}/{verdict.max_score}: {verdict.detail}"


@pytest.mark.parametrize("stage", sorted({e.stage for e in ENTRIES}))
def test_corpus_is_big_enough(stage):
    kinds = [e.kind for e in ENTRIES if e.stage == stage]
    assert kinds.count("buggy") >= 6 and kinds.count("correct") >= 2


def test_an_entry_whose_hidden_tests_crash_is_not_proved(monkeypatch, tmp_path):
    """A buggy entry "caught" only by a crashing hidden test proves nothing: the verdict fails."""
    crashed = {"score": 0.0, "tests": [{"name": "x: t", "score": 0.0, "max_score": 1.0, "status": "failed",
                                        "output": "the grader could not check this result", "tags": ["x", "grader-error"]}]}
    monkeypatch.setattr(corpus, "grade", lambda path, options: crashed)
    entry_file = tmp_path / "bug.py"
    entry_file.write_text('"""BUG: anything"""\n')
    verdict = corpus.judge(corpus.Entry("x", "buggy", entry_file))
    assert not verdict.ok and "crashed" in verdict.detail
