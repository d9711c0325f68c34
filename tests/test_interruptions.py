"""A grading stopped half-way: `llmgrade grade` under SIGTERM and SIGKILL, and its temporary folders.

SIGTERM: what finished is written, the exit is 143, no worker, template or folder outlives it.
SIGKILL: nothing can clean up then; its scratch root (grader/scratch.py) is swept by the next
llmgrade process. (`grade-all` under signals: tests/test_grade_all.py.)
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from grader import scratch
from grader.course.stages import project_root
from procs import HANGING_BUILD_VOCAB, alive, descendants, stop

ROOT = project_root()


def _roots_of(pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"{scratch.PREFIX}{pid}-*"))


def test_sweep_removes_the_roots_of_processes_that_are_gone(tmp_path):
    me = os.getpid()
    mine = tmp_path / f"{scratch.PREFIX}{me}-{scratch._start_time(me)}-abc"
    reused = tmp_path / f"{scratch.PREFIX}{me}-{scratch._start_time(me) - 1}-abc"   # same pid, another process
    gone = tmp_path / f"{scratch.PREFIX}999999999-5-abc"
    other = tmp_path / "llmgrade-uids"   # not a scratch root: never touched
    for folder in (mine, reused, gone, other):
        (folder / "inside").mkdir(parents=True)
    assert sorted(scratch.sweep(str(tmp_path))) == sorted([reused, gone])
    assert mine.exists() and other.exists() and not reused.exists() and not gone.exists()


def test_a_process_removes_its_root_when_it_exits(tmp_path):
    code = ("from grader import scratch; d = scratch.mkdtemp('x-'); (d / 'f').write_text('1'); "
            "print(scratch.root())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    root = Path(done.stdout.strip())
    assert done.returncode == 0 and root.name.startswith(scratch.PREFIX), done.stderr
    assert not root.exists()


def _grade(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bigram.py").write_text(HANGING_BUILD_VOCAB)
    out = tmp_path / "out" / "results.json"
    process = subprocess.Popen([sys.executable, "-m", "grader", "grade", str(tmp_path / "sub"), "--out", str(out),
                                "--stage", "bigram", "--device", "cpu", "--timeout", "600"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    deadline = time.monotonic() + 120   # until a worker runs the loop: the grading is under way
    while time.monotonic() < deadline and not (len(descendants(process.pid)) >= 2 and
                                               any(p.glob("llmgrade-*/worker-*") for p in _roots_of(process.pid))):
        time.sleep(0.2)
    return process, out


@pytest.mark.slow
def test_sigterm_stops_a_grading_keeps_what_finished_and_leaves_nothing(tmp_path):
    """`grade` killed while a student's call spins: it stops within seconds, writes the results
    (the tests left marked as not run), exits 143, and no worker, template or folder outlives it."""
    process, out = _grade(tmp_path)
    try:
        assert _roots_of(process.pid), "no worker started within 120 s"
        time.sleep(1)
        below = descendants(process.pid)   # the template, the worker (and its supervisor)
    except BaseException:
        process.kill()
        raise
    output = stop(process, signal.SIGTERM)
    assert process.returncode == 143 and "stopped by SIGTERM" in output, output
    results = json.loads(out.read_text())
    assert any("did not run (the grading run was interrupted)" in t.get("output", "") for t in results["tests"])
    assert not _roots_of(process.pid)
    time.sleep(2)
    assert len(below) >= 2 and not [pid for pid in below if alive(pid)], "processes outlived `grade`"


@pytest.mark.slow
def test_a_killed_grading_leaves_its_root_to_the_next_sweep(tmp_path):
    process, _ = _grade(tmp_path)
    try:
        assert _roots_of(process.pid), "no worker started within 120 s"
    finally:
        process.kill()
        process.communicate(timeout=60)
    left = _roots_of(process.pid)
    assert left   # SIGKILL: no chance to clean up
    assert set(scratch.sweep()) >= set(left)
    assert not any(p.exists() for p in left)
