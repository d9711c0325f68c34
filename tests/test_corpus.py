"""The hidden suites are proved on the corpus: every bug loses points, every correct style gets full marks."""

import re
from pathlib import Path

import pytest
import torch

from grader.course import corpus, corpus_convert
from grader.engine.grade import GradeOptions

CORPUS = Path(__file__).parent / "corpus"
ENTRIES = corpus.entries(CORPUS)
BUGGY = [e for e in ENTRIES if e.kind == "buggy"]


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_corpus_entry(entry):
    if entry.requires == "cuda" and not torch.cuda.is_available():
        pytest.skip("this bug only shows on a GPU (a result left on the CPU); no CUDA here")
    verdict = corpus.judge(entry, GradeOptions(call_timeout=10.0))
    assert verdict.ok, f"{entry.name}: {verdict.score}/{verdict.max_score}: {verdict.detail}"


@pytest.mark.parametrize("entry", BUGGY, ids=[e.name for e in BUGGY])
def test_caught_by(entry):
    """The fast lane: each bug's CAUGHT_BY test alone fails and names it (EXPECT), inside its PART."""
    assert entry.caught_by, f"{entry.name}: no CAUGHT_BY line"
    if entry.requires == "cuda" and not torch.cuda.is_available():
        pytest.skip("this bug only shows on a GPU (a result left on the CPU); no CUDA here")
    verdict = corpus.judge_caught_by(entry, GradeOptions(call_timeout=10.0))
    assert verdict.ok, f"{entry.name}: {entry.caught_by}: {verdict.score}/{verdict.max_score}: {verdict.detail}"
    assert {f for f, _ in verdict.failing} == {entry.caught_by.split("::")[1].split("[")[0]}   # no other test ran and failed


def test_most_bugs_are_patches():
    """A bug reads as a few lines: buggy entries are patches against the reference (or a correct entry)."""
    patches = [e for e in BUGGY if e.is_patch]
    assert len(patches) >= 0.9 * len(BUGGY)
    assert all(e.base is None or e.base.path.exists() for e in patches)


def test_a_patch_that_does_not_apply_fails_loudly(tmp_path, capsys):
    """The reference changed under a patch: materialise raises, naming the entry and git's message,
    and the entry's verdict is a failure (never a skip)."""
    reference = corpus.reference_files("bigram")["bigram.py"]
    changed = reference.replace(".mean().item()", ".mean().item()  # the line as it was", 1)
    assert changed != reference
    stale = corpus_convert.make_diff({"bigram.py": changed}, {"bigram.py": changed.replace(".mean()", ".sum()")})
    entry_file = tmp_path / "bigram" / "buggy" / "stale.patch"
    entry_file.parent.mkdir(parents=True)
    entry_file.write_text("BUG: summed\nEXPECT: summed\nCAUGHT_BY: test_bigram.py::test_nll_hand\n\n" + stale)
    entry = corpus.Entry("bigram", "buggy", entry_file)
    with pytest.raises(corpus.PatchError, match=r"bigram/buggy/stale: its patch no longer applies.*bigram\.py"):
        corpus.materialise(entry, tmp_path / "out")
    verdict = corpus.judge(entry)
    assert not verdict.ok and "no longer applies" in verdict.detail
    assert corpus.judge_caught_by(entry).ok is False
    [reported] = corpus.report(tmp_path)
    assert not corpus.meets_targets(reported) and "FAILED: bigram/buggy/stale" in capsys.readouterr().out


def test_a_patch_applies_to_the_marker_free_reference(tmp_path):
    """materialise writes the reference without its solution markers, then the patch's change."""
    entry = next(e for e in BUGGY if e.is_patch and e.stage == "bigram" and e.path.stem == "nll_sum")
    folder = corpus.materialise(entry, tmp_path / "sub")
    text = (folder / "bigram.py").read_text()
    assert "SOLUTION" not in text and ".sum().item()" in text
    assert [p.name for p in folder.iterdir()] == ["bigram.py"]


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
    from grader.engine.pytest_plugin import TestRecord

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


def test_the_full_check_runs_and_checks_the_caught_by_test(monkeypatch, tmp_path):
    """test_corpus_entry stands for test_caught_by in the whole suite (tests/conftest.py): its grading
    goes on until the CAUGHT_BY test has run, which must fail naming the bug."""
    entry_file = tmp_path / "loss.py"
    entry_file.write_text('"""BUG: loss summed\nEXPECT: summed\nCAUGHT_BY: test_x.py::test_gpt_loss\n"""\n')
    entry = corpus.Entry("x", "buggy", entry_file)
    seen = []

    def counting(failing):
        fake = _fake_grade(failing)

        def grade(path, options):
            stop = options.stop_when
            options.stop_when = lambda record: seen.append(record.function) or stop(record)
            return fake(path, options)
        return grade

    monkeypatch.setattr(corpus, "grade", counting({"test_ffn_gelu": "summed", "test_gpt_loss": "the loss is summed"}))
    assert corpus.judge(entry).ok
    assert seen == ["test_ffn_gelu", "test_block_forward", "test_gpt_loss"]   # not stopped at the first catch
    monkeypatch.setattr(corpus, "grade", _fake_grade({"test_ffn_gelu": "summed"}))
    verdict = corpus.judge(entry)
    assert not verdict.ok and "CAUGHT_BY test test_x.py::test_gpt_loss did not fail naming it" in verdict.detail
    entry_file.write_text('"""BUG: loss summed\nEXPECT: summed\nCAUGHT_BY: test_x.py::test_gone\n"""\n')
    verdict = corpus.judge(corpus.Entry("x", "buggy", entry_file))
    assert not verdict.ok and "did not run (no such test?)" in verdict.detail


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


def test_a_correct_entry_loses_exactly_its_loses_tests(monkeypatch, tmp_path):
    """A correct style that breaks a course rule (a loop over positions is slow) names the tests that
    charge it: it must lose those and nothing else; keeping their points is a fault too."""
    entry_file = tmp_path / "loops.py"
    entry_file.write_text('"""STYLE: loops\nLOSES: test_x.py::test_gpt_loss\n"""\n')
    entry = corpus.Entry("x", "correct", entry_file)
    assert entry.loses == {"test_gpt_loss"}
    monkeypatch.setattr(corpus, "grade", _fake_grade({"test_gpt_loss": "not vectorised"}))
    verdict = corpus.judge(entry)
    assert verdict.ok and verdict.detail == "lost only test_gpt_loss"
    monkeypatch.setattr(corpus, "grade", _fake_grade({"test_gpt_loss": "slow", "test_ffn_gelu": "values differ"}))
    assert not corpus.judge(entry).ok
    monkeypatch.setattr(corpus, "grade", _fake_grade({}))
    verdict = corpus.judge(entry)
    assert not verdict.ok and "kept the points of test_gpt_loss" in verdict.detail
    assert corpus.Entry("x", "buggy", entry_file).loses == set()   # a bug's header never excuses tests


def test_a_folder_entry_takes_its_reference_modules_from_the_references(tmp_path):
    """A folder entry does not copy the helpers that are other stages' references: its stage
    module names them (REFERENCE_MODULES), and they are written from solutions/, marker-free."""
    folder = tmp_path / "transformer" / "correct" / "mine"
    folder.mkdir(parents=True)
    (folder / "transformer.py").write_text('"""STYLE: mine\nREFERENCE_MODULES: embeddings, cross_entropy\n"""\n')
    entry = corpus.Entry("transformer", "correct", folder)
    assert entry.reference_modules == ["embeddings", "cross_entropy"]
    out = corpus.materialise(entry, tmp_path / "out")
    assert sorted(p.name for p in out.glob("*.py")) == ["cross_entropy.py", "embeddings.py", "transformer.py"]
    assert (out / "embeddings.py").read_text() == corpus.reference_files("embeddings")["embeddings.py"]
    assert "# BEGIN SOLUTION" not in (out / "embeddings.py").read_text()


def _write(root, files: dict[str, str]):
    """Write `files` (path under root -> text) and return root."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


_MINE = '"""STYLE: mine\nREFERENCE_MODULES: embeddings\n"""\nX = 1\n'


def test_a_correct_patch_applies_to_a_folder_base_or_a_patch_base(tmp_path):
    """BASE may name a folder entry (materialised with its REFERENCE_MODULES, not the stage's reference
    files) or a patch entry (materialised first): the patch applies to that."""
    two, three = _MINE.replace("X = 1", "X = 2"), _MINE.replace("X = 1", "X = 3")
    diff = corpus_convert.make_diff
    root = _write(tmp_path / "corpus", {
        "transformer/correct/mine/transformer.py": _MINE,
        "transformer/correct/two.patch": "STYLE: mine, X = 2\nBASE: correct/mine\n\n"
                                         + diff({"transformer.py": _MINE}, {"transformer.py": two}),
        "transformer/correct/three.patch": "STYLE: two's, X = 3\nBASE: correct/two\n\n"
                                           + diff({"transformer.py": two}, {"transformer.py": three}),
    })
    two_entry = corpus.find_entry(root, "transformer/correct/two")
    assert two_entry.base.path == root / "transformer/correct/mine" and two_entry.base.path.is_dir()
    files = corpus.entry_files(two_entry)
    assert sorted(files) == ["embeddings.py", "transformer.py"] and "X = 2" in files["transformer.py"]
    assert files["embeddings.py"] == corpus.reference_files("embeddings")["embeddings.py"]
    files = corpus.entry_files(corpus.find_entry(root, "transformer/correct/three"))
    assert sorted(files) == ["embeddings.py", "transformer.py"] and "X = 3" in files["transformer.py"]


def _loops_attention(root):
    """A correct attention entry of `root`'s corpus: a patch against the reference; returns its attention.py."""
    reference = corpus.reference_files("attention")["attention.py"]
    loops = reference.replace(".tril()\n", ".tril()  # loops\n", 1)
    assert loops != reference
    _write(root, {"attention/correct/loops.patch": "STYLE: loops\n\n" + corpus_convert.make_diff(
        {"attention.py": reference}, {"attention.py": loops})})
    return loops


def test_entry_modules_take_other_stages_entries_materialised(tmp_path):
    """ENTRY_MODULES (in a folder's stage module, or a patch's header) writes the named entries'
    stage modules, materialised, over the base: here a patch entry of the attention stage."""
    root = tmp_path / "corpus"
    loops = _loops_attention(root)
    _write(root, {"transformer/correct/mine/transformer.py":
                  _MINE.replace("REFERENCE_MODULES: embeddings", "REFERENCE_MODULES: embeddings cross_entropy\n"
                                "ENTRY_MODULES: attention/correct/loops")})
    folder = corpus.find_entry(root, "transformer/correct/mine")
    assert folder.entry_modules == ["attention/correct/loops"]
    files = corpus.entry_files(folder)
    assert sorted(files) == ["attention.py", "cross_entropy.py", "embeddings.py", "transformer.py"]
    assert files["attention.py"] == loops
    reference = corpus.reference_files("transformer")
    changed = reference["transformer.py"].replace("import torch\n", "import torch  # patched\n", 1)
    _write(root, {"transformer/correct/patched.patch": "STYLE: p\nENTRY_MODULES: attention/correct/loops\n\n"
                  + corpus_convert.make_diff(reference, {**reference, "transformer.py": changed})})
    files = corpus.entry_files(corpus.find_entry(root, "transformer/correct/patched"))
    assert files["attention.py"] == loops and files["transformer.py"] == changed
    assert files["embeddings.py"] == reference["embeddings.py"]


def test_a_patch_with_no_diff_is_its_base_and_entry_modules(tmp_path):
    """A header-only patch is allowed when it names a BASE or ENTRY_MODULES: it is those as they are.
    One that names neither, or whose hunks lost their `--- a/` start, fails loudly."""
    root = tmp_path / "corpus"
    loops = _loops_attention(root)
    _write(root, {"transformer/correct/mine/transformer.py": _MINE,
                  "transformer/correct/over.patch": "STYLE: mine over loops\nBASE: correct/mine\n"
                                                    "ENTRY_MODULES: attention/correct/loops\n"})
    over = corpus.find_entry(root, "transformer/correct/over")
    assert not over.has_diff
    files = corpus.entry_files(over)
    assert sorted(files) == ["attention.py", "embeddings.py", "transformer.py"]
    assert files["transformer.py"] == _MINE and files["attention.py"] == loops
    _write(root, {"transformer/correct/nothing.patch": "STYLE: a header and nothing else\n"})
    with pytest.raises(corpus.EntryError, match=r"transformer/correct/nothing: its patch has no diff"):
        corpus.entry_files(corpus.find_entry(root, "transformer/correct/nothing"))
    hunks = corpus_convert.make_diff({"transformer.py": _MINE}, {"transformer.py": _MINE.replace("X = 1", "X = 2")})
    _write(root, {"transformer/correct/torn.patch": "STYLE: t\nBASE: correct/mine\n\n"
                  + hunks[hunks.index("@@"):]})
    with pytest.raises(corpus.EntryError, match=r"transformer/correct/torn: its patch is malformed"):
        corpus.entry_files(corpus.find_entry(root, "transformer/correct/torn"))


def test_a_bad_base_or_entry_modules_fails_loudly(tmp_path):
    """A BASE or ENTRY_MODULES that names no entry, an ENTRY_MODULES of the entry's own stage, and a
    chain that comes back to its entry: materialise raises EntryError naming the entry and the line,
    and the entry's verdict is a failure with that message."""
    root = tmp_path / "corpus"
    _loops_attention(root)
    _write(root, {"transformer/correct/mine/transformer.py": _MINE,
                  "transformer/correct/no_base.patch": "STYLE: s\nBASE: correct/missing\n",
                  "transformer/correct/no_module.patch": "STYLE: s\nBASE: correct/mine\n"
                                                         "ENTRY_MODULES: attention/correct/lops\n",
                  "transformer/correct/own_stage.patch": "STYLE: s\nENTRY_MODULES: transformer/correct/mine\n",
                  "transformer/correct/round_a.patch": "STYLE: s\nBASE: correct/round_b\n",
                  "transformer/correct/round_b.patch": "STYLE: s\nBASE: correct/round_a\n"})
    cases = {"no_base": r"no_base: BASE: no corpus entry 'transformer/correct/missing'",
             "no_module": r"no_module: ENTRY_MODULES: no corpus entry 'attention/correct/lops'",
             "own_stage": r"own_stage: ENTRY_MODULES: transformer/correct/mine is of its own stage",
             "round_a": r"transformer/correct/round_a -> transformer/correct/round_b -> "
                        r"transformer/correct/round_a: BASE / ENTRY_MODULES go round in a circle"}
    for name, message in cases.items():
        entry = corpus.find_entry(root, f"transformer/correct/{name}")
        with pytest.raises(corpus.EntryError, match=message):
            corpus.materialise(entry, tmp_path / name)
        verdict = corpus.judge(entry)
        assert not verdict.ok and re.search(message, verdict.detail)
