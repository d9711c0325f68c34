"""A "was it implemented" probe gives credit for a returned value only, never for an exception.

Some points go to code that merely exists (the banned-API points: "this stage's source uses no
banned API" means nothing for an empty file), so the hidden tests first check that something is
implemented. An empty function that raises ValueError (or KeyError...) instead of the skeleton's
NotImplementedError must not count: each stage's skeleton, with every NotImplementedError made a
ValueError, gets 0 from those probes.
"""

import pytest

from grader.course.stages import project_root
from grader.engine.grade import GradeOptions, grade

PROBED = ["cross_entropy", "embeddings", "tokenizer"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", PROBED)
def test_functions_that_all_raise_value_error_earn_no_probe_points(make_submission, stage):
    skeleton = (project_root() / "assignments" / f"{stage}.py").read_text()
    assert "raise NotImplementedError" in skeleton
    raising = skeleton.replace("raise NotImplementedError", "raise ValueError('not written yet')")
    results = grade(make_submission({f"{stage}.py": raising}),
                    GradeOptions(stage_names=[stage], device="cpu", call_timeout=3.0))
    probes = [t for t in results["tests"] if "banned APIs" in t["name"]]
    assert len(probes) == 1, [t["name"] for t in results["tests"]]
    assert probes[0]["score"] == 0 and probes[0]["status"] == "failed", probes[0]
    assert "grader-error" not in probes[0].get("tags", [])
