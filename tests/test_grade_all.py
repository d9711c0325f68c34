"""`llmgrade grade-all` and `llmgrade gradebook`, end to end from the command line (stage bigram only).

The batch: a reference copy, a buggy corpus entry, a zip of the reference, a garbage
zip and a folder whose bigram.py calls os._exit at import -> five rows, errors where
expected; a re-run skips; shards 1/2 + 2/2 merged equal the unsharded gradebook.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from grader.course import corpus
from grader.course.stages import project_root
from grader.workflows.grade_all import find_submissions, parse_shard, take_shard
from procs import HANGING_BUILD_VOCAB, stop

ROOT = project_root()


def llmgrade(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def grade_all(subs, out, *more):
    return llmgrade("grade-all", subs, "--out", out, "--stage", "bigram", "--device", "cpu", *more)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    subs = root / "subs"
    for name in ("ada", "carl", "eve"):
        (subs / name).mkdir(parents=True)
    shutil.copy(ROOT / "solutions/bigram.py", subs / "ada/bigram.py")
    (subs / "carl/bigram.py").write_text(corpus.module_text("bigram", "nll_sum"))
    (subs / "eve/bigram.py").write_text("import os\nos._exit(3)\n")
    with zipfile.ZipFile(subs / "bob.zip", "w") as archive:
        archive.write(ROOT / "solutions/bigram.py", "bigram.py")
    (subs / "dan.zip").write_bytes(b"this is not a zip")
    (subs / "notes.txt").write_text("not a submission")
    run = grade_all(subs, root / "out", "--workers", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    return subs, root / "out", run


@pytest.mark.slow
@pytest.mark.xdist_group("batch")   # one process grades the module's batch once
def test_every_submission_is_one_row(batch):
    subs, out, run = batch
    rows = {row["id"]: row for row in read_csv(out / "gradebook.csv")}
    assert list(rows) == ["ada", "bob", "carl", "dan", "eve"]
    assert list(read_csv(out / "gradebook.csv")[0]) == ["id", "bigram", "total", "max_total", "error", "notes"]
    assert rows["ada"]["bigram"] == rows["ada"]["total"] == rows["ada"]["max_total"] == rows["bob"]["total"]
    assert rows["ada"]["error"] == "" and rows["bob"]["error"] == "" and rows["carl"]["error"] == ""
    assert 0 < float(rows["carl"]["total"]) < float(rows["ada"]["total"])
    assert rows["dan"]["total"] == "0" and "zip could not be read" in rows["dan"]["error"]
    assert rows["eve"]["total"] == "0" and "exit code 3" in rows["eve"]["error"]
    for sid in rows:
        results = json.loads((out / sid / "results.json").read_text())
        assert results["tests"] and (out / sid / "feedback.html").read_text().startswith("<!DOCTYPE html>")
    assert "looks like the NLL is summed" in (out / "carl/feedback.html").read_text()
    assert "5 graded" in run.stdout


@pytest.mark.slow
@pytest.mark.xdist_group("batch")   # one process grades the module's batch once
def test_rerun_skips_what_is_graded_unless_forced(batch):
    """Skipped only when the same content was graded by the same tests: a touched file is skipped,
    a resubmission (changed content) is graded again and the run says why."""
    subs, out, _ = batch
    before = (out / "ada/results.json").stat().st_mtime_ns
    os.utime(subs / "ada/bigram.py")                     # touched, not changed: still skipped
    (out / "bob/results.json").write_text("{not json")   # a broken result is graded again
    (out / "carl/feedback.html").unlink()                # a missing page is rewritten
    (subs / "eve/bigram.py").write_text("import os\nos._exit(4)\n")   # resubmitted
    run = grade_all(subs, out)   # one grading process is enough for two submissions
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 graded, 3 skipped" in run.stdout
    assert "graded again, the submission changed since it was graded: eve" in run.stdout
    assert (out / "ada/results.json").stat().st_mtime_ns == before
    assert json.loads((out / "bob/results.json").read_text())["score"] > 0
    assert "exit code 4" in (out / "eve/results.json").read_text()
    assert (out / "carl/feedback.html").exists()
    (subs / "eve/bigram.py").write_text("import os\nos._exit(3)\n")   # as the other tests expect it
    again = grade_all(subs, out)
    assert "1 graded, 4 skipped" in again.stdout and "graded again, the submission changed" in again.stdout


@pytest.mark.slow
@pytest.mark.xdist_group("batch")   # one process grades the module's batch once
def test_shards_merge_into_the_same_gradebook(batch, tmp_path):
    subs, out, _ = batch
    runs = [subprocess.Popen([sys.executable, "-m", "grader", "grade-all", str(subs), "--out",
                              str(tmp_path / f"shard{i}"), "--shard", f"{i}/2", "--stage", "bigram",
                              "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in (1, 2)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stdout.read()
    assert [r["id"] for r in read_csv(tmp_path / "shard1/gradebook-shard-1-of-2.csv")] == ["ada", "carl", "eve"]
    assert [r["id"] for r in read_csv(tmp_path / "shard2/gradebook-shard-2-of-2.csv")] == ["bob", "dan"]
    merged = llmgrade("gradebook", tmp_path / "shard1", tmp_path / "shard2", "--out", tmp_path / "merged.csv")
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert read_csv(tmp_path / "merged.csv") == read_csv(out / "gradebook.csv")
    again = llmgrade("gradebook", out, tmp_path / "shard1", "--out", tmp_path / "dup.csv")
    assert again.returncode == 0 and "warning" in again.stdout and "ada" in again.stdout


@pytest.mark.slow
def test_a_submission_over_its_time_is_one_error_row_and_graded_again(tmp_path):
    subs = tmp_path / "subs"
    (subs / "ada").mkdir(parents=True)
    shutil.copy(ROOT / "solutions/bigram.py", subs / "ada/bigram.py")
    run = grade_all(subs, tmp_path / "out", "--submission-timeout", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    row, = read_csv(tmp_path / "out/gradebook.csv")
    assert row["id"] == "ada" and row["total"] == "" and "longer than 1 s" in row["error"]
    assert "grading failed" in (tmp_path / "out/ada/feedback.html").read_text()
    rerun = grade_all(subs, tmp_path / "out", "--submission-timeout", "1")
    assert "0 skipped" in rerun.stdout


def test_two_submissions_for_one_id_is_an_error_row(tmp_path):
    subs = tmp_path / "subs"
    (subs / "bob").mkdir(parents=True)
    (subs / "bob.zip").write_bytes(b"")
    run = grade_all(subs, tmp_path / "out")
    assert run.returncode == 0, run.stdout + run.stderr
    row, = read_csv(tmp_path / "out/gradebook.csv")
    assert "two submissions for bob" in row["error"]


def test_shard_slices_are_deterministic_and_cover_everything(tmp_path):
    for name in ("c", "a", "e", "b", "d"):
        (tmp_path / name).mkdir()
    ids = list(find_submissions(tmp_path))
    assert ids == ["a", "b", "c", "d", "e"]
    slices = [take_shard(ids, (i, 3)) for i in (1, 2, 3)]
    assert slices == [["a", "d"], ["b", "e"], ["c"]]
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "x", "1/0", "1-2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def main_in_process(args, capsys, monkeypatch):
    """`llmgrade ARGS` through grader.cli.main, in this process (the same code path, no torch start-up)."""
    from grader.cli import main

    monkeypatch.setattr(sys, "argv", ["llmgrade", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as ended:
        code = ended.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("args, words", [
    (["grade-all", "SUBS", "--out", "OUT", "--shard", "3/2"], "1 <= I <= N"),
    (["grade-all", "SUBS", "--out", "OUT", "--shard", "two"], "I/N with whole numbers"),
    (["grade-all", "SUBS", "--out", "OUT", "--workers", "0"], "--workers"),
    (["grade-all", "SUBS", "--out", "SUBS/graded"], "must not be inside"),
    (["grade-all", "SUBS/missing", "--out", "OUT"], "does not exist"),
    (["grade-all", "SUBS", "--out", "OUT", "--stage", "nope"], "unknown stage"),
    (["gradebook", "SUBS", "--out", "OUT/g.csv"], "no <id>/results.json"),
])
def test_bad_arguments_are_one_clear_line(tmp_path, capsys, monkeypatch, args, words):
    (tmp_path / "subs").mkdir()
    args = [a.replace("SUBS", str(tmp_path / "subs")).replace("OUT", str(tmp_path / "out")) for a in args]
    code, _, err = main_in_process(args, capsys, monkeypatch)
    assert code != 0
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert words in err


@pytest.mark.parametrize("command", ["grade-all", "gradebook", "grade"])
def test_help_shows_an_example(capsys, monkeypatch, command):
    code, out, _ = main_in_process([command, "--help"], capsys, monkeypatch)
    assert code == 0 and f"Example: llmgrade {command}" in out


def test_the_grading_key_follows_content_tests_and_stages(tmp_path, monkeypatch):
    """Same files zipped again (new timestamps) keep their hash; a changed hidden test, a changed
    file or a stage not graded before each make a results.json stale, with its reason."""
    import time as clock

    from grader.engine import fingerprint

    from grader.course import stages

    one, two = tmp_path / "one.zip", tmp_path / "two.zip"
    for path in (one, two):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(zipfile.ZipInfo("bigram.py", clock.localtime(clock.time() + 120 * (path == two))[:6]),
                             "x = 1\n")
    assert one.read_bytes() != two.read_bytes()
    assert fingerprint.submission_hash(one) == fingerprint.submission_hash(two)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/bigram.py").write_text("x = 1\n")
    (tmp_path / "sub/__pycache__").mkdir()
    (tmp_path / "sub/__pycache__/bigram.pyc").write_bytes(b"\0")   # not part of the content
    bigram = stages.select(["bigram"])
    key = fingerprint.grading_key(tmp_path / "sub", bigram)
    results = {"extra_data": {fingerprint.KEY: key}}
    assert fingerprint.why_stale(results, key) is None
    (tmp_path / "sub/bigram.py").write_text("x = 2\n")
    assert "submission changed" in fingerprint.why_stale(results, fingerprint.grading_key(tmp_path / "sub", bigram))
    assert "not graded for sampling" in fingerprint.why_stale(
        results, key | {"stages": ["bigram", "sampling"]})
    assert "no grading key" in fingerprint.why_stale({}, key)
    copy = tmp_path / "course"
    shutil.copytree(ROOT / "autograder_tests" / "bigram", copy / "autograder_tests" / "bigram")
    [moved] = stages.select(["bigram"], ROOT)
    monkeypatch.setattr(type(moved), "hidden_tests", property(lambda s: copy / "autograder_tests" / s.name))
    before = fingerprint.tests_hash([moved])
    (copy / "autograder_tests/bigram/test_bigram.py").write_text("# changed\n", encoding="utf-8")
    assert fingerprint.tests_hash([moved]) != before


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_batch_at_once_and_keeps_what_finished(tmp_path, signum):
    """kill or Ctrl-C: the grading processes (and their workers) die within seconds, the graded
    submission keeps its row, the others' rows say they were not graded, and the exit code says why."""
    subs = tmp_path / "subs"
    for name in ("a", "b", "c"):
        (subs / name).mkdir(parents=True)
        (subs / name / "bigram.py").write_text(HANGING_BUILD_VOCAB)
    shutil.copy(ROOT / "solutions/bigram.py", subs / "a/bigram.py")
    out = tmp_path / "out"
    batch = subprocess.Popen([sys.executable, "-m", "grader", "grade-all", str(subs), "--out", str(out),
                              "--stage", "bigram", "--device", "cpu", "--timeout", "600", "--workers", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (out / "a" / "results.json").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (out / "a" / "results.json").exists(), "the reference was not graded in 240 s"
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(batch.pid)], capture_output=True,
                                  text=True).stdout.split()
    except BaseException:
        batch.kill()
        raise
    output = stop(batch, signum)
    assert batch.returncode == 128 + signum, output
    assert f"stopped by {signum.name}" in output and "is partial" in output
    rows = {row["id"]: row for row in read_csv(out / "gradebook.csv")}
    assert float(rows["a"]["total"]) > 0 and rows["a"]["error"] == ""
    for sid in ("b", "c"):
        assert rows[sid]["total"] == "" and f"not graded: the batch was stopped by {signum.name}" in rows[sid]["error"]
    time.sleep(1)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()
             and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]]
    assert not alive, f"grading processes outlived the batch: {alive}"
    left = [p.name for p in Path(tempfile.gettempdir()).glob("llmgrade-run-*")
            if p.name.split("-")[2] in children + [str(batch.pid)]]
    assert not left, f"the killed grading processes' temporary folders were left: {left}"


@pytest.mark.slow
def test_progress_shows_what_is_in_flight_and_for_how_long(tmp_path):
    """grade_all reports each id as a grading process takes it; the progress column lists the ids
    being graded, longest-running first, with their seconds."""
    from grader.commands.grade_all import InFlightColumn
    from grader.workflows.grade_all import BatchOptions, grade_all as run_batch

    (tmp_path / "subs" / "ada").mkdir(parents=True)
    shutil.copy(ROOT / "solutions/bigram.py", tmp_path / "subs/ada/bigram.py")
    begun, finished = [], []
    run_batch(tmp_path / "subs", tmp_path / "out", BatchOptions(stage_names=["bigram"], device="cpu"),
              progress=lambda outcome: finished.append((outcome.id, list(begun))), on_begin=begun.append)
    assert finished == [("ada", ["ada"])]   # begun before it finished
    now = time.monotonic()
    column = InFlightColumn({"bob": now - 3, "ada": now - 41, "cy": now - 1, "dan": now - 2, "eve": now - 5})
    assert column.render(None).plain == "now: ada 41s, eve 5s, bob 3s, dan 2s +1"
    assert InFlightColumn({}).render(None).plain == ""


def test_a_batch_below_full_isolation_says_so_once_before_grading(tmp_path):
    (tmp_path / "subs").mkdir()
    env = {**os.environ, "LLMGRADE_ISOLATION_OFF": "seccomp"}
    run = subprocess.run([sys.executable, "-m", "grader", "grade-all", str(tmp_path / "subs"), "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    text = " ".join(run.stdout.split())
    assert text.count("warning: grading at isolation level") == 1 and "seccomp: switched off" in text, text
