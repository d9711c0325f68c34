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
