"""Grading inside a Gradescope-sized container (768 MB, 0.5 vCPU; issue 11).

A submission whose function allocates far more than the container holds must lose the
tests that call it, never the grading run: the kernel's OOM killer picks a worker (they
raise their oom_score_adj to 1000, grader/worker/sandbox.py), the grader reports that test
as killed for memory and the next test gets a fresh worker; results.json is written and
valid. Runs `benchmarks/bench_container.py`'s cgroup (root, cgroup v1 memory and cpu).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

from grader.course.stages import project_root
from grader.engine.results_json import validate

BENCH = project_root() / "benchmarks" / "bench_container.py"

# bigram.nll allocates (and touches) 2 GiB first: every other bigram function is the reference.
HOG = '''

_reference_nll = nll


def nll(probs, words, stoi):
    import torch

    hog = torch.ones(2**29)   # 2 GiB of float32, touched
    return _reference_nll(probs, words, stoi) + float(hog[0]) * 0
'''


def _container_module():
    spec = importlib.util.spec_from_file_location("bench_container", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_container", module)   # its dataclass looks itself up there
    spec.loader.exec_module(sys.modules["bench_container"])
    module = sys.modules["bench_container"]
    return module


def _why_not() -> str:
    if os.geteuid() != 0:
        return "making a cgroup needs root"
    if not all(Path("/sys/fs/cgroup", c, "cgroup.procs").exists() for c in ("memory", "cpu")):
        return "no cgroup v1 memory and cpu controllers under /sys/fs/cgroup"
    return ""


@pytest.mark.slow
@pytest.mark.skipif(bool(_why_not()), reason=_why_not() or "-")
def test_a_memory_hog_fails_its_tests_not_the_run(tmp_path):
    bench = _container_module()
    submission = tmp_path / "submission"
    shutil.copytree(project_root() / "solutions", submission)
    with open(submission / "bigram.py", "a", encoding="utf-8") as module:
        module.write(HOG)

    run = bench.grade_in_container("hog", submission, ["bigram"], 768 * 2**20, 0.5,
                                   bench.GRADESCOPE_LEVEL, timeout=300)

    assert run.code == 0, "the grading process itself was killed or failed"
    assert run.results is not None, "no results.json"
    validate(run.results)
    assert run.oom_kills >= 1, "the hog was stopped before the container ran out: the test proves nothing"
    failed = [t for t in run.results["tests"] if t["score"] < t["max_score"]]
    passed = [t for t in run.results["tests"] if t["score"] == t["max_score"]]
    assert failed and all("nll" in t["name"] for t in failed), [t["name"] for t in failed]
    assert all("memory" in t.get("output", "") for t in failed), [t.get("output") for t in failed]
    assert len(passed) >= len(run.results["tests"]) - 4, [t["name"] for t in failed]
