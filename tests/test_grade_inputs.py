"""Every bad input ends as a clear message and a valid results.json, never a lost batch."""

import io
import json
import shutil
import stat
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest

from grader.course import corpus
from grader.course.stages import project_root
from grader.engine import results_json
from grader.engine.grade import GradeOptions, grade
from procs import HANGING_BUILD_VOCAB

REFERENCE = (project_root() / "solutions" / "bigram.py").read_text()
FAST = GradeOptions(stage_names=["bigram"], device="cpu", call_timeout=3.0)


def graded(path, options=FAST):
    results = grade(path, options)
    results_json.validate(results)
    return results


def max_score(results):
    return sum(t["max_score"] for t in results["tests"])


def failures(results):
    return {t["name"]: t["output"] for t in results["tests"] if t["status"] == "failed"}


def replace_function(source: str, name: str, new: str) -> str:
    """The reference with function `name` replaced by `new` (a whole def)."""
    start = source.index(f"def {name}(")
    end = source.find("\ndef ", start + 1)
    return source[:start] + new.strip() + "\n\n" + (source[end + 1:] if end != -1 else "")


@pytest.fixture(scope="module")
def reference_results():
    return graded(project_root() / "solutions")


@pytest.mark.slow
def test_reference_gets_full_marks(reference_results):
    assert reference_results["score"] == max_score(reference_results) > 0
    assert len(reference_results["tests"]) >= 15


@pytest.mark.slow
def test_missing_module(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    results = graded(tmp_path)
    assert results["score"] == 0
    assert all("bigram.py is missing from your submission" in out for out in failures(results).values())


def test_syntax_error(make_submission):
    results = graded(make_submission({"bigram.py": REFERENCE + "\ndef broken(:\n    pass\n"}))
    assert results["score"] == 0
    assert all("SyntaxError" in out and "bigram.py, line" in out for out in failures(results).values())


def test_import_time_error_names_the_file(make_submission):
    results = graded(make_submission({"bigram.py": "import helper\n" + REFERENCE,
                                      "helper.py": "raise RuntimeError('broken helper')\n"}))
    output = next(iter(failures(results).values()))
    assert "importing bigram.py raised RuntimeError: broken helper" in output and "helper.py" in output


def test_a_missing_dependency_is_named(make_submission):
    results = graded(make_submission({"bigram.py": "from attention import softmax\n" + REFERENCE}))
    output = next(iter(failures(results).values()))
    assert "bigram.py imports attention, but attention.py is not in your submission" in output


@pytest.mark.slow
def test_printing_past_the_output_limit_is_named(make_submission):
    """A print loop that passes the worker's 16 MiB file-size limit fails with EFBIG; the feedback
    names the output limit, not only `OSError: [Errno 27] File too large`."""
    noisy = replace_function(REFERENCE, "build_vocab", """
def build_vocab(words):
    for _ in range(18):
        print("x" * 2**20, flush=True)
    return {}, {}
""")
    results = graded(make_submission({"bigram.py": noisy}))
    charged = [out for name, out in failures(results).items() if "build_vocab" in out or "vocab" in name]
    assert charged and any("File too large" in out and "output limit" in out for out in charged), charged


@pytest.mark.slow
def test_missing_function_costs_only_its_tests(make_submission, reference_results):
    source = REFERENCE[:REFERENCE.index("def nll(")] + REFERENCE[REFERENCE.index("def sample("):]
    results = graded(make_submission({"bigram.py": source}))
    failed = failures(results)
    assert failed and all(name.startswith("bigram: nll") for name in failed)
    assert all("bigram.py defines no 'nll'" in out for out in failed.values())
    assert 0 < results["score"] < reference_results["score"]


@pytest.mark.slow
def test_wrong_signature(make_submission):
    source = replace_function(REFERENCE, "nll", "def nll(probs, words):\n    return 0.0\n")
    failed = failures(graded(make_submission({"bigram.py": source})))
    assert failed and all("TypeError" in out and "signature" in out for out in failed.values())


@pytest.mark.slow
def test_hostile_submission_costs_only_the_tests_that_call_it(make_submission):
    source = REFERENCE
    source = replace_function(source, "sample", "def sample(probs, itos, n, generator, max_len=50):\n"
                                                "    import time\n    time.sleep(3600)\n")
    source = replace_function(source, "nll", "def nll(probs, words, stoi):\n"
                                             "    import os\n    os._exit(1)\n")
    source = replace_function(source, "bigram_probs", "def bigram_probs(counts, smoothing=1.0):\n"
                                                      "    import ctypes\n    ctypes.string_at(0)\n")
    source = replace_function(source, "bigram_counts", "def bigram_counts(words, stoi):\n"
                                                       "    return torch.ones(50 * 2**30, dtype=torch.uint8)\n")
    # one second a call: each of the sample tests waits out its hanging call
    results = graded(make_submission({"bigram.py": source}), replace(FAST, call_timeout=1.0))
    failed = failures(results)
    passed = [t["name"] for t in results["tests"] if t["status"] == "passed"]
    assert passed and all(name.startswith("bigram: build_vocab") for name in passed)
    for name, output in failed.items():
        function = name.split(": ")[1].split()[0]
        expected = {"sample": "did not finish within 1 s", "nll": "exit code 1",
                    "bigram_probs": "SIGSEGV", "bigram_counts": "memory"}[function]
        assert expected in output, (name, output)


def notebook(cells) -> str:
    nb = nbformat.v4.new_notebook()
    for source, tags in cells:
        cell = nbformat.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("# My bigram notebook"))
    return nbformat.writes(nb)


@pytest.mark.slow
def test_notebook_export_cells_are_graded(make_submission, reference_results):
    head, body = REFERENCE.split("def build_vocab", 1)
    cells = [("#| export\n" + head, None), ("print('scratch work, never run')\nraise SystemExit", None),
             ("def build_vocab" + body, ["export"])]
    results = graded(make_submission({"bigram.ipynb": notebook(cells)}))
    assert results["score"] == reference_results["score"]
    assert "bigram.ipynb: graded its exported cells" in results["output"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a valid Jupyter notebook"),
    (notebook([("def build_vocab(words): pass", None)]), "no code cell marked"),
], ids=["not-json", "no-export-cell"])   # fixed ids: the notebook's cell ids are random
def test_broken_notebook(make_submission, content, message):
    results = graded(make_submission({"bigram.ipynb": content}))
    assert results["score"] == 0
    assert all(message in out for out in failures(results).values())


def zip_bytes(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buffer.getvalue()


@pytest.mark.slow
def test_zip_with_a_top_folder(tmp_path, reference_results):
    archive = tmp_path / "ada.zip"
    archive.write_bytes(zip_bytes({"hw/bigram.py": REFERENCE, "__MACOSX/hw/._bigram.py": "junk"}))
    results = graded(archive)
    assert results["score"] == reference_results["score"]
    assert "found the modules in the folder hw/" in results["output"]


@pytest.mark.parametrize("name, data, message", [
    ("bad.zip", zip_bytes({"bigram.py": REFERENCE})[:-30], "could not be read"),
    ("bad.zip", zip_bytes({"../../evil.py": "x = 1"}), "unsafe path"),
    ("bad.zip", b"PK\x03\x04 this is not really a zip", "could not be read"),
    ("submission.rar", b"Rar!", "not a folder, a .zip"),
], ids=["truncated", "path-traversal", "not-a-zip", "rar"])
def test_malformed_zip(tmp_path, name, data, message):
    archive = tmp_path / name
    archive.write_bytes(data)
    results = graded(archive)
    assert results["score"] == 0 and message in results["output"]
    assert all(message in out for out in failures(results).values())


@pytest.mark.slow
def test_cli_writes_results_and_exits_zero(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bigram.py").write_text("x = 1\n")
    out = tmp_path / "out" / "results.json"
    run = subprocess.run([sys.executable, "-m", "grader", "grade", str(tmp_path / "sub"), "--stage", "bigram",
                          "--out", str(out), "--device", "cpu"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    results = json.loads(out.read_text())
    results_json.validate(results)
    assert results["score"] == 0 and "defines no 'build_vocab'" in run.stdout


@pytest.mark.parametrize("args, message", [
    (["grade", "/no/such/path"], "does not exist"),
    (["grade", ".", "--stage", "nope"], "unknown stage 'nope'"),
    (["grade", ".", "--device", "tpu"], "'tpu' is not one of"),
    # a numeric option out of range is a usage error (exit 2), never a class graded 0 with exit 0
    (["grade", ".", "--timeout", "0"], "0.0 is not in the range 0<x<=3600"),
    (["grade", ".", "--timeout", "-1"], "-1.0 is not in the range 0<x<=3600"),
    (["grade", ".", "--timeout", "nan"], "'nan' is not a number of seconds"),
    (["grade-all", ".", "--out", "o", "--timeout", "0"], "0.0 is not in the range"),
    (["grade-all", ".", "--out", "o", "--submission-timeout", "inf"], "inf is not in the range 1<=x<=86400"),
    (["grade-all", ".", "--out", "o", "--workers", "0"], "0 is not in the range x>=1"),
])
def test_cli_errors_are_one_line(args, message, tmp_path):
    run = subprocess.run([sys.executable, "-m", "grader", *args], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2
    assert message in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_stop_when_ends_the_run_after_the_first_matching_test(make_submission):
    """The corpus runner stops a buggy entry's grading once a test caught it: only tests that ran count."""
    broken = replace_function(REFERENCE, "build_vocab", "def build_vocab(words):\n    return {}, {}\n")
    options = GradeOptions(stage_names=["bigram"], device="cpu", call_timeout=3.0,
                           stop_when=lambda record: not record.passed)
    results = graded(make_submission({"bigram.py": broken}), options)
    assert len(results["tests"]) == 1 and results["tests"][0]["status"] == "failed"
    assert "build_vocab" in results["tests"][0]["output"]


# ---- symbolic links and what a parse error may say -------------------------------

CANARY = "CANARY-7f3a-secret-line"


def load_only(path, tmp_path, modules=("bigram",)):
    """submissions.load without grading: the problems and notes a submission's files give."""
    from grader.engine import submissions

    return submissions.load(path, list(modules), tmp_path / "loaded" / "submission")


def all_messages(results) -> str:
    return json.dumps(results)


@pytest.fixture
def secret(tmp_path):
    """A file the submission must never get read: not JSON, so a parser would quote it."""
    path = tmp_path / "secret" / "shadow"
    path.parent.mkdir()
    path.write_text(CANARY + ": root:$6$hash\n")
    return path


def test_symlinked_notebook_is_refused_and_never_read(tmp_path, secret):
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "bigram.ipynb").symlink_to(secret)
    results = graded(folder)
    assert results["score"] == 0
    assert all("bigram.ipynb is a symbolic link; submit the file itself" in out for out in failures(results).values())
    assert CANARY not in all_messages(results)


def test_symlinks_in_a_folder(tmp_path, make_submission, secret):
    """A linked stage .py is the module's problem; other links (files, folders) are left out with a note."""
    folder = make_submission({"bigram.ipynb": "{}", "helpers.py": "x = 1\n"})
    (folder / "bigram.py").symlink_to(project_root() / "solutions" / "bigram.py")
    (folder / "linked_helper.py").symlink_to(secret)
    (folder / "linked_dir").symlink_to(secret.parent, target_is_directory=True)
    loaded = load_only(folder, tmp_path)
    assert loaded.problems == {"bigram": "bigram.py is a symbolic link; submit the file itself"}
    assert sorted(p.name for p in loaded.root.rglob("*")) == ["bigram.ipynb", "helpers.py"]   # no link copied
    assert "left out 2 symbolic links (linked_dir/, linked_helper.py): submit the files themselves" in loaded.notes
    assert CANARY not in json.dumps([loaded.problems, loaded.notes])


def test_zip_with_symlink_members(tmp_path, secret):
    def link(name: str, target: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name)
        info.create_system = 3                              # Unix, so the mode bits mean what they say
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        return info

    archive = tmp_path / "ada.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(link("hw/bigram.ipynb", str(secret)), str(secret))
        zf.writestr(link("hw/util.py", "../../../solutions/bigram.py"), "../../../solutions/bigram.py")
        zf.writestr("hw/notes.py", "x = 1\n")
    loaded = load_only(archive, tmp_path)
    assert loaded.problems == {"bigram": "bigram.ipynb is a symbolic link; submit the file itself"}
    assert "left out 1 symbolic link (util.py): submit the files themselves" in loaded.notes
    assert sorted(p.name for p in loaded.root.rglob("*")) == ["notes.py"]
    assert not any(p.is_symlink() for p in tmp_path.joinpath("loaded").rglob("*"))   # never created
    alone = tmp_path / "alone.zip"              # the link alone in its folder: still found, still refused
    with zipfile.ZipFile(alone, "w") as zf:
        zf.writestr(link("hw/bigram.py", str(secret)), str(secret))
    assert load_only(alone, tmp_path / "alone").problems == {
        "bigram": "bigram.py is a symbolic link; submit the file itself"}
    results = graded(archive)
    assert results["score"] == 0 and CANARY not in all_messages(results)
    assert all("bigram.ipynb is a symbolic link" in out for out in failures(results).values())


def test_a_symlinked_single_file_is_refused(tmp_path, secret):
    link = tmp_path / "bigram.ipynb"
    link.symlink_to(secret)
    loaded = load_only(link, tmp_path)
    assert loaded.problems == {"bigram": "bigram.ipynb is a symbolic link; submit the file itself"}


def _cell_source_of_the_wrong_type() -> str:
    nb = json.loads(notebook([("#| export\nx = 1", None)]))
    nb["cells"][1]["source"] = {CANARY: CANARY}
    return json.dumps(nb)


@pytest.mark.parametrize("content, reason", [
    (CANARY + " {not json", "not valid JSON: line 1, column 1"),
    ('{"cells": "\\' + CANARY + '"}', "not valid JSON: line 1, column 12"),       # json quotes a bad escape
    (json.dumps([CANARY]), "the JSON is not an object"),
    (json.dumps({"nbformat": CANARY, "cells": []}), "unsupported or missing nbformat version"),
    (json.dumps({"nbformat": 4, "nbformat_minor": 5, "cells": [{"cell_type": CANARY}]}),
     "it does not follow the notebook format"),
    (_cell_source_of_the_wrong_type(), "it does not follow the notebook format at cells/1/source"),
], ids=["not-json", "bad-escape", "a-list", "version", "cell-type", "source-type"])
def test_notebook_errors_never_quote_the_file(tmp_path, make_submission, content, reason):
    loaded = load_only(make_submission({"bigram.ipynb": content}), tmp_path)
    assert loaded.problems["bigram"] == f"bigram.ipynb is not a valid Jupyter notebook ({reason})"
    assert CANARY not in json.dumps([loaded.problems, loaded.notes])


def test_notebook_error_in_the_feedback_quotes_nothing(make_submission):
    results = graded(make_submission({"bigram.ipynb": CANARY + "\n{ not json"}))
    assert results["score"] == 0 and CANARY not in all_messages(results)
    assert all("not valid JSON: line 1, column 1" in out for out in failures(results).values())


@pytest.mark.slow
def test_the_same_submission_gets_the_same_grade_on_every_run(make_submission):
    """The contract's promise of fixed seeds: even a submission that draws from the global
    RNG (a mistake) is graded the same way twice: same scores, same feedback."""
    folder = make_submission({"bigram.py": corpus.module_text("bigram", "sample_global_rng")})
    first, second = graded(folder), graded(folder)
    assert first["score"] < max_score(first)
    assert [(t["name"], t["score"], t["output"]) for t in first["tests"]] == \
        [(t["name"], t["score"], t["output"]) for t in second["tests"]]


@pytest.mark.slow
def test_an_import_that_hangs_is_tried_once(make_submission):
    """A module whose import never ends costs its call timeout once per grading, not once per test;
    every test of its stage names the module and what happened."""
    import time

    started = time.monotonic()
    results = graded(make_submission({"bigram.py": "import time\n\ntime.sleep(3600)\n"}))
    elapsed = time.monotonic() - started
    outputs = list(failures(results).values())
    assert len(outputs) == len(results["tests"]) > 10 and results["score"] == 0
    assert all("importing bigram.py did not finish within 3 s" in out for out in outputs)
    assert sum("tried once in this grading" in out for out in outputs) == len(outputs) - 1
    # one 3 s timeout, then every other test fails at once (not 20+ timeouts: over 60 s)
    assert elapsed < 3.0 * 6, elapsed


@pytest.mark.slow
def test_a_failing_stage_is_named_in_the_stages_that_use_it(make_submission):
    """transformer.py imports attention.py: when attention fails its own tests, each failing
    transformer test says so, so that the student fixes attention, not a correct transformer."""
    root = project_root()
    files = {f"{name}.py": (root / "solutions" / f"{name}.py").read_text()
             for name in ("cross_entropy", "embeddings", "transformer")}
    files["attention.py"] = corpus.module_text("attention", "returns_output_only")
    results = graded(make_submission(files), GradeOptions(stage_names=["attention", "transformer"],
                                                          device="cpu", call_timeout=10.0))
    failed = failures(results)
    transformer = [out for name, out in failed.items() if name.startswith("transformer:")]
    attention = [name for name in failed if name.startswith("attention:")]
    assert attention and transformer
    assert all(f"your transformer.py uses your attention.py, which fails {len(attention)} attention tests"
               in out for out in transformer), transformer[0]
    assert not any("uses your" in out for name, out in failed.items() if name.startswith("attention:"))


@pytest.mark.slow
def test_a_time_budget_stops_starting_tests_and_still_writes_results(make_submission, tmp_path, reference_results):
    """Past the time budget no test starts: every test is listed, the ones not started say why, and
    the gradebook's error column counts them. (In this process: the command line's --time-budget
    is at least 10 s, the library's any. The gradescope tests pass it through the command line.)"""
    from grader.workflows import gradebook

    hanging = replace_function(REFERENCE, "build_vocab", HANGING_BUILD_VOCAB)
    out = tmp_path / "sid" / "results.json"
    # the first test starts well within 3 s and its call hangs for 4 s: no test starts after it
    results_json.write(grade(make_submission({"bigram.py": hanging}),
                             replace(FAST, call_timeout=4.0, time_budget=3.0)), out)
    results = json.loads(out.read_text())
    results_json.validate(results)
    assert len(results["tests"]) == len(reference_results["tests"])   # every test is listed
    not_started = [t for t in results["tests"] if t["output"].startswith("not graded: the grading run's time budget")]
    assert 0 < len(not_started) < len(results["tests"]) and results["score"] == 0
    assert "time budget ran out" in results["output"]
    assert f"{len(not_started)} tests not graded: the run's time budget ran out" in gradebook.row_for("sid", out).error


@pytest.mark.slow
def test_the_backstop_timeout_says_so(make_submission):
    """A test that outlives pytest-timeout's backstop (its calls have a longer limit) is stopped
    and told so; it once read "check failed: assert terminalreporter is not None"."""
    looping = make_submission({"bigram.py": HANGING_BUILD_VOCAB})
    options = GradeOptions(stage_names=["bigram"], device="cpu", call_timeout=60.0, test_timeout=3.0,
                           only_tests=["test_bigram.py::test_vocab_hand"])
    [test] = graded(looping, options)["tests"]
    assert test["status"] == "failed"
    assert test["output"] == "this test took longer than its time limit and was stopped", test["output"]
