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


def _fake_grade(failing: dict[str, str]):
    """A grade() that runs three tests; `failing` maps a test function to its feedback."""
    from grader.pytest_plugin import TestRecord

    def grade(path, options):
        tests = []
        for function in ("test_ffn_gelu", "test_block_forward", "test_gpt_loss"):
            record = TestRecord("x", f"x: {function}", 2.0, function=function)
            if function in failing:
                record.passed, record.feedback = False, [failing[function]]
            if options.stop_when is not None and options.stop_when(record):
                break
            tests.append({"name": record.name, "score": record.score, "max_score": 2.0, "tags": ["x"],
                          "status": "passed" if record.passed else "failed", "output": "\n".join(record.feedback)})
        return {"score": sum(t["score"] for t in tests), "tests": tests}
    return grade


def test_a_bug_charged_outside_its_part_is_not_proved(monkeypatch, tmp_path):
    """Error carried forward: PART names the tests that may charge a bug; any other failing test is a fault."""
    entry_file = tmp_path / "gelu.py"
    entry_file.write_text('"""BUG: tanh GELU\nEXPECT: GELU\nPART: test_ffn_*\n"""\n')
    entry = corpus.Entry("x", "buggy", entry_file)
    assert entry.part == ["test_ffn_*"]
    monkeypatch.setattr(corpus, "grade", _fake_grade({"test_ffn_gelu": "uses the tanh GELU"}))
    assert corpus.judge(entry).ok
    monkeypatch.setattr(corpus, "grade", _fake_grade({"test_ffn_gelu": "uses the tanh GELU",
                                                      "test_block_forward": "values differ (your GELU)"}))
    verdict = corpus.judge(entry)
    assert not verdict.ok and "outside its PART" in verdict.detail and "test_block_forward" in verdict.detail
    assert verdict.failing == [("test_ffn_gelu", True), ("test_block_forward", True)]


def test_report_counts_failing_tests_and_how_many_name_the_bug(monkeypatch, tmp_path, capsys):
    buggy = tmp_path / "x" / "buggy"
    buggy.mkdir(parents=True)
    (buggy / "bug.py").write_text('"""BUG: b\nEXPECT: GELU\n"""\n')
    monkeypatch.setattr(corpus, "grade", _fake_grade({"test_ffn_gelu": "tanh GELU",
                                                      "test_gpt_loss": "values differ"}))
    [verdict] = corpus.report(tmp_path)
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("x/buggy/bug"))
    assert line.split()[1:] == ["4.0", "2", "1", "-"]          # lost, failed, named, outside
    assert verdict.failing == [("test_ffn_gelu", True), ("test_gpt_loss", False)]


def test_report_why_shows_the_tests_that_do_not_name_the_bug(monkeypatch, tmp_path, capsys):
    """--why lists each failing test whose feedback misses the EXPECT words, with that feedback;
    --entry keeps only matching entries; the exit status says whether every target is met."""
    buggy = tmp_path / "x" / "buggy"
    buggy.mkdir(parents=True)
    (buggy / "bug.py").write_text('"""BUG: b\nEXPECT: GELU\n"""\n')
    (buggy / "other.py").write_text('"""BUG: o\nEXPECT: never graded\n"""\n')
    monkeypatch.setattr(corpus, "grade", _fake_grade({"test_ffn_gelu": "tanh GELU",
                                                      "test_gpt_loss": "values differ by 3%"}))
    assert corpus.main([str(tmp_path), "--report", "--why", "--entry", "x/bug"]) == 1
    out = capsys.readouterr().out
    assert "    test_gpt_loss: values differ by 3%" in out
    assert "    test_ffn_gelu" not in out and "x/buggy/other" not in out
    monkeypatch.setattr(corpus, "grade", _fake_grade({"test_ffn_gelu": "tanh GELU"}))
    assert corpus.main([str(tmp_path), "--report", "--entry", "x/bug"]) == 0
