"""feedback.html: one self-contained page per results.json; `llmgrade grade --html` end to end."""

import html
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from grader.course import corpus
from grader.course.stages import project_root
from grader.workflows.feedback_html import find_curves, mismatch_table, render


def _results(tests, **extra):
    return {"score": sum(t["score"] for t in tests), "execution_time": 1.5, "output": "Graded.",
            "tests": tests, "leaderboard": [], **extra}


def _test(name, score, max_score, output, stage="bigram", **extra):
    return {"name": f"{stage}: {name}", "score": score, "max_score": max_score,
            "status": "passed" if score == max_score else "failed", "output": output, "tags": [stage], **extra}


def test_stages_tests_and_scores_are_shown():
    page = render(_results([_test("build_vocab", 2, 2, "passed"),
                            _test("nll", 0, 3, "nll: looks like the NLL is summed\n(got 6.43817, expected 0.715352)"),
                            _test("softmax rows", 1, 4, "partly", stage="cross_entropy")]), title="Feedback for ada")
    assert "Feedback for ada" in page
    assert "bigram: 2 / 5" in page and "cross_entropy: 1 / 4" in page and "Total: 3 / 9" in page
    assert "looks like the NLL is summed" in page
    assert page.index("bigram: build_vocab") < page.index("cross_entropy: softmax rows")


def test_what_to_fix_comes_first_and_a_diagnosis_is_shown_once():
    """A summary of what to fix by stage at the top; in a stage, failures before passes; the same
    feedback in 3 tests is shown once and explains all 3; each diagnosis points to its handout section."""
    summed = "looks like the NLL is summed instead of averaged"
    page = render(_results([_test("build_vocab maps characters", 2, 2, "passed"),
                            _test("nll of the words", 0, 3, summed),
                            _test("nll of one word", 0, 1, summed),
                            _test("nll on float64", 0, 1, summed),
                            _test("bigram_counts of the words", 0, 2, "expected shape (27, 27), got (26, 26)")]))
    fix = page[page.index("What to fix"):page.index('id="stage-bigram"')]
    assert "bigram</a>: 7 points lost in 4 tests" in fix
    assert fix.count(summed) == 1 and "(3 tests, read 02-bigram.md, § 5." in fix
    assert "expected shape (27, 27), got (26, 26)" in fix and "(1 test, read 02-bigram.md, § Your task)" in fix
    stage = page[page.index('id="stage-bigram"'):]
    assert stage.count(summed) == 1 and stage.count("The same feedback as") == 2
    assert stage.index("nll of the words") < stage.index("bigram_counts") < stage.index("build_vocab")
    assert "Read: 02-bigram.md, § 5. Measuring quality" in stage
    assert "What to fix" not in render(_results([_test("build_vocab", 2, 2, "passed")]))


def test_everything_from_results_is_escaped():
    page = render(_results([_test("<script>alert(1)</script>", 0, 1, "got <b>x</b> & more")]))
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt; &amp; more" in page


def test_self_contained():
    page = render(_results([_test("a", 1, 1, "passed", extra_data={"train_loss": [4.0, 3.0, 2.5]})]))
    for external in ("<link", "src=", "@import", "url("):
        assert external not in page
    assert "<style>" in page and "<svg" in page


def test_tensor_mismatch_becomes_a_table():
    table = mismatch_table("scaled_dot_product_attention(q, k, v): max abs error 0.31 at index (0, 2, 5): "
                           "got 0.1, expected 0.41 (tolerance 1e-05 + 0.0001·|expected|); 3 of 64 entries differ")
    cells = [c.split("</td>")[0] for c in table.split("<td>")[1:]]
    assert cells == ["max abs error", "(0, 2, 5)", "0.1", "0.41", "0.31", "1e-05 + 0.0001·|expected|"]
    assert "<td>shape</td><td></td><td>(2, 8, 4)</td><td>(2, 4, 8)</td>" in mismatch_table(
        "forward: expected shape (2, 4, 8), got (2, 8, 4)")
    assert mismatch_table("bigram.py is missing from your submission") == ""


def test_training_curve_from_extra_data_or_output():
    assert find_curves({"extra_data": {"train_loss": [4.2, 3.1, "nan", 2.0]}}) == {"train_loss": [4.2, 3.1, 2.0]}
    assert find_curves({"output": "val loss 2.3\ntrain_loss: [4.2, 3.5, 2.9]\nval_loss = [3.0, 2.6]"}) == {
        "train_loss": [4.2, 3.5, 2.9], "val_loss": [3.0, 2.6]}
    assert find_curves({"output": "train_loss: [4.2]"}) == {}   # one point is not a curve
    page = render(_results([_test("a budgeted training run", 6, 12, "train_loss: [4.2, 3.5, 2.9]",
                                  stage="training")],
                           leaderboard=[{"name": "validation loss (cpu)", "value": 2.41, "order": "asc"}]))
    assert "<polyline" in page and "validation loss (cpu)" in page and "2.41" in page


@pytest.fixture(scope="module")
def graded_page(tmp_path_factory):
    """`llmgrade grade --html` on a buggy bigram (the NLL summed): the page and the results."""
    folder = tmp_path_factory.mktemp("html")
    submission = folder / "carl"
    submission.mkdir()
    (submission / "bigram.py").write_text(corpus.module_text("bigram", "nll_sum"))
    from click.testing import CliRunner

    from grader.cli import cli

    run = CliRunner().invoke(cli, ["grade", str(submission), "--stage", "bigram", "--device", "cpu",
                                   "--out", str(folder / "out/results.json"),
                                   "--html", str(folder / "out/feedback.html")])   # in this process
    assert run.exit_code == 0, run.output
    return folder / "out/feedback.html", json.loads((folder / "out/results.json").read_text())


@pytest.mark.slow
@pytest.mark.xdist_group("graded_page")   # one process grades the module's page once
def test_grade_writes_the_html_page(graded_page):
    page_path, results = graded_page
    page = page_path.read_text(encoding="utf-8")
    for test in results["tests"]:
        assert html.escape(test["name"]) in page
    assert "looks like the NLL is summed" in page and "class=\"mismatch\"" in page


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not _chromium(), reason="no headless Chromium here (Debian package `chromium`)")
@pytest.mark.slow
@pytest.mark.xdist_group("graded_page")
def test_renders_in_headless_chromium(graded_page):
    page_path, results = graded_page
    run = subprocess.run([_chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--dump-dom",
                          page_path.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    assert "<table" in dom and "bigram: " in dom
    failed = [t["name"] for t in results["tests"] if t["status"] == "failed"]
    assert failed and all(name.split(": ", 1)[1].split("(")[0] in dom for name in failed)
