"""Hostile submissions, one per route, graded at every isolation level this machine allows.

Each level grades all its routes in ONE `llmgrade grade-all --workers 2 --stage bigram` batch
(a module-scoped fixture per level, see harness.py); the tests below read that batch's outputs.
Every route's bigram.py is the skeleton (honest score 0) plus attack code run at import time
(routes.py). A route is contained when its score equals the honest control's, no canary of the
course copies shows in any output, nothing it started or left outlives the batch, and the batch
finished with every submission graded. Where a level cannot contain a route by design, its test
skips and says why, with what the route observed.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from . import harness
from .harness import CONTROL, CONTROL_B, PARTIAL_ID, VICTIM
from .routes import ROUTES

# One xdist process runs this whole module (pyproject: --dist loadgroup): each level's batches are
# graded once, and never beside another copy of the same level, whose kill-the-grader route
# would take down the other copy's batches (same uid at the user level).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.xdist_group("hostile")]

LEVELS = ("full", "container", "user")

# What a level cannot hold by design (the test skips with this reason, and what was observed).
SAME_UID = "the worker runs as the grader's own uid: "
NOT_CONTAINED = {
    ("r01_libc_open", "user"): SAME_UID + "the course copy is the grader's, readable by the worker",
    ("r04_dir_fd", "user"): SAME_UID + "the course copy is the grader's, readable by the worker "
                                       "(a relative path with dir_fd also passes the audit hook)",
    ("r05_proc_mem", "user"): SAME_UID + "the grading processes and the batch are non-dumpable, but "
                                         "workers of the same uid (its own, another student's) can be read",
    ("r07_kill_grader", "user"): SAME_UID + "it may signal the grading processes and the batch itself",
    ("r08_overwrite", "user"): SAME_UID + "it may write the other students' scratch copies and submissions",
    ("r09_results_dir", "user"): SAME_UID + "it may write the batch's output folder",
    ("r11_leftovers", "user"): SAME_UID + "files it leaves in /tmp, /var/tmp and /dev/shm are the grader's",
    ("r12_other_copy", "container"): "file modes are all that protect a course copy without a mount "
                                     "namespace: a world-readable copy elsewhere is readable by any uid",
    ("r12_other_copy", "user"): "no uid and no mount namespace: a world-readable copy is readable",
    ("r13_fork_bomb", "user"): SAME_UID + "no per-uid process limit (it would count the grader's own "
                                          "processes) and no cgroup; not run, so that the test cannot "
                                          "hang the machine",
}

# Holes found by these tests, with a fix proposed (xfail, not strict: they pass once fixed).
KNOWN_HOLES: dict[tuple[str, str], str] = {
    # none open: the daemon and the flood, graded last by their grading process at the user level,
    # were contained by the template's subreaper clean-up (the tests assert it)
}


@pytest.fixture(scope="module", params=LEVELS)
def run(request):
    why = harness.level_unavailable(request.param)
    if why:
        pytest.skip(f"level {request.param} cannot run here: {why}")
    result = harness.run_level(request.param, _scratch_root())
    print(f"\nlevel {result.level}: {result.seconds:.1f} s "
          f"({', '.join(f'{b.seconds:.1f} s' for b in result.batches)})")
    yield result
    shutil.rmtree(result.base, ignore_errors=True)


def _scratch_root() -> str:
    # under /tmp itself (not pytest's 0700 folder): at the container level the course copy must be
    # reachable by other uids for the attacks to mean anything, at the user level by uid 65532
    return "/tmp"


def notes(run, sid: str) -> str:
    """What the route printed about itself ([hostile ...] lines of its results.json)."""
    text = ""
    results = run.batch_of(sid).results(sid) if any(sid in b.ids for b in run.batches) else None
    for test in (results or {}).get("tests", []):
        text += test.get("output", "")
    lines = [line.strip() for line in text.splitlines() if line.startswith("[hostile")]
    return " | ".join(dict.fromkeys(lines))[:1500] or "(nothing printed)"


def honest(run, sid: str) -> float:
    control = CONTROL_B if sid == "r07_kill_grader" and run.level == "user" else CONTROL
    score = run.batch_of(control).score(control)
    assert score is not None, f"the honest control {control} has no results.json"
    return score


def assert_batch_finished(run, sid: str) -> None:
    batch = run.batch_of(sid)
    assert batch.returncode == 0, f"grade-all ended with {batch.returncode}:\n{batch.output[-3000:]}"
    book = batch.gradebook()
    for other in batch.ids:
        assert other in book, f"no gradebook row for {other}:\n{batch.output[-2000:]}"
        if other != "r09_results_dir":
            assert batch.results(other) is not None, f"no results.json for {other}"


def assert_no_canary(run) -> None:
    for where, text in run.texts().items():
        for canary in run.canaries:
            assert canary not in text, f"a canary of the course leaked into {where}"


def assert_nothing_left(run, route: str | None = None) -> None:
    def mine(p) -> bool:   # named by the route, or unnamed in the route's batch
        if p.name.startswith("hx-"):
            return p.name.startswith(f"hx-{route}"[:15])
        return any(route in b.ids for b in run.batches[p.batch:p.batch + 1])

    procs = [str(p) for p in run.leftover_processes if route is None or mine(p)]
    assert not procs, f"processes outlived the batch: {procs}"
    files = [f for f in run.leftover_files   # files carrying the marker are r11's
             if route is None or route == "r11_leftovers" or run.marker not in f]
    assert not files, f"files outlived the batch: {files}"
    assert run.shm_after == run.shm_before, "a SysV shared-memory segment outlived the batch"


def check(run, route: str) -> None:
    """The route is contained: honest score, nothing obtained, no canary, nothing left, batch done."""
    ran = any(route in b.ids for b in run.batches)
    assert_batch_finished(run, CONTROL)   # the level's main batch, whatever this route did
    if ran and not (run.level == "user" and route == "r07_kill_grader"):
        assert_batch_finished(run, route)
    reason = NOT_CONTAINED.get((route, run.level))
    if reason:
        batch = run.batch_of(route) if ran else None
        observed = (f"grade-all exit {batch.returncode}, score {batch.score(route)}; {notes(run, route)}"
                    if batch else "not run")
        pytest.skip(f"not contained at the {run.level} level by design: {reason} (observed: {observed})")
    if (route, run.level) in KNOWN_HOLES:
        try:
            contained(run, route)
        except AssertionError as exc:
            pytest.xfail(f"known hole at the {run.level} level: {KNOWN_HOLES[(route, run.level)]} "
                         f"(observed: {str(exc)[:600]})")
    else:
        contained(run, route)


def contained(run, route: str) -> None:
    batch = run.batch_of(route)
    assert batch.score(route) == honest(run, route), \
        f"{route} scored {batch.score(route)} (honest {honest(run, route)}): {notes(run, route)}"
    for sign in ("OBTAINED", "WRITE-OK", "PLANTED"):
        assert sign not in notes(run, route), notes(run, route)
    assert_no_canary(run)
    assert_nothing_left(run, route)


# ---------------------------------------------------------------- the level and the controls

def test_level_is_the_one_staged(run):
    expected = {"full": "full", "container": "container", "user": "minimal"}[run.level]
    assert harness.isolation_level(run.doctor) == expected, run.doctor
    if run.level == "container":
        rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
                for line in run.doctor.splitlines() if line.count("│") >= 3}
        assert rows.get("uid") == "yes" and rows.get("seccomp") == "yes", run.doctor
        assert rows.get("namespaces") == "no" and rows.get("cgroups") == "no", run.doctor


def test_honest_controls(run):
    batch = run.batch_of(CONTROL)
    assert_batch_finished(run, CONTROL)
    assert batch.score(CONTROL) == 0
    partial = batch.score(PARTIAL_ID)
    full_marks = sum(t.get("max_score", 0) for t in batch.results(PARTIAL_ID)["tests"])
    assert partial is not None and 0 < partial < full_marks, (partial, full_marks)


def test_no_canary_anywhere(run):
    assert_no_canary(run)


def test_nothing_left_behind(run):
    if run.level == "user":
        pytest.skip("not contained at the user level by design: the worker's leftovers are the grader's "
                    f"own uid's (observed: {len(run.leftover_processes)} processes, "
                    f"{len(run.leftover_files)} files)")
    assert_nothing_left(run)


# ---------------------------------------------------------------- one test per route

@pytest.mark.parametrize("route", [r for r in ROUTES if r not in ("r08_overwrite", "r10_plant_files",
                                                                 "r06_daemon", "r09_results_dir")])
def test_route(run, route):
    check(run, route)


def test_r06_daemon_cannot_rewrite_results(run):
    route = "r06_daemon"
    batch = run.batch_of(route)
    time.sleep(0)   # run_level already waited past the daemon's first write
    results = batch.results(route)
    if (route, run.level) not in KNOWN_HOLES:
        assert results is not None and results.get("score") != 999, "the daemon rewrote results.json"
    check(run, route)


def test_r08_victim_keeps_its_own_score(run):
    route = "r08_overwrite"
    victim = run.batch_of(VICTIM)
    if (route, run.level) not in NOT_CONTAINED:
        assert victim.score(VICTIM) == run.batch_of(PARTIAL_ID).score(PARTIAL_ID), \
            f"the victim scored {victim.score(VICTIM)}: {notes(run, route)}"
    check(run, route)


def test_r09_directory_at_results_path(run):
    route = "r09_results_dir"
    batch = run.batch_of(route)
    assert batch.returncode == 0, batch.output[-3000:]
    assert route in batch.gradebook(), f"no gradebook row for {route}:\n{batch.output[-2000:]}"
    path = batch.out / route / "results.json"
    if (route, run.level) in NOT_CONTAINED:
        row = batch.gradebook()[route]
        pytest.skip(f"not contained at the {run.level} level by design: {NOT_CONTAINED[(route, run.level)]} "
                    f"(observed: results.json is {'a directory' if path.is_dir() else 'a file'}; "
                    f"gradebook error: {row.get('error', '')[:300]!r}; {notes(run, route)})")
    assert path.is_file(), "results.json is not a file"
    check(run, route)


def test_r10_no_planted_files(run):
    route = "r10_plant_files"
    assert not run.planted, f"files planted in the grader's runtime: {run.planted}"
    planted = "PLANTED" in notes(run, route)
    assert not planted, notes(run, route)
    check(run, route)
