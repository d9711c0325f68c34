"""The one import for the authors of hidden and public tests.

    import pytest
    import torch
    from grader.testing import expect_close, expect_tensor, randn

    @pytest.mark.points(2)
    def test_my_function_matches_the_reference(student, reference, device):
        \"\"\"my_function on a (4, 6) float32 input\"\"\"
        x = randn(4, 6, seed=1, device=device)            # the same numbers on every device
        got = student.my_stage.my_function(x)
        expect_tensor(got, what="my_function(x (4, 6))", shape=(4, 6), dtype=torch.float32)
        expect_close(got, reference.my_function(x.double().cpu()).float().to(device),
                     what="my_function(x (4, 6))",
                     mistakes={"the last dimension is not normalised": lambda: x / x.sum(0)})

Everything here is re-exported from the module that defines it (grader.engine.checks,
grader.engine.remote, grader.engine.timing, grader.engine.banned, ...); test files import from here
only (tests/test_testing_api.py holds them to it). The guide with a worked
example per check, the fixtures, the markers and how tolerances are derived is
docs/writing-tests.md.

Fixtures (provided by grader.engine.pytest_plugin; name them as test arguments):
see `FIXTURES`. Markers: see `MARKERS`.

Seeded tensor makers: `randn`, `randint` and `seeded` draw on the CPU from
`torch.Generator().manual_seed(seed)` (in float64 for `randn`) and only then
cast and move, so a test's inputs are the same numbers on the CPU and on CUDA,
and the same in every test run.
"""

from __future__ import annotations

import torch

from grader.engine.banned import expect_own_code_without_banned_apis
from grader.engine.checks import (CheckFailure, as_scalar, assert_outside, describe, equality_mismatch, expect_close,
                           expect_equal, expect_raises, expect_scalar, expect_sequence, expect_tensor,
                           expect_type, reduction_atol, tensor_mismatch, tolerance, unit_roundoff)
from grader.course.stages import project_root
from grader.engine.gpt2 import GPT2_PATTERN, GPT2_SPECIAL_TOKENS, gpt2_encoding, gpt2_ranks
from grader.engine.hints import add_hint
from grader.engine.pytest_plugin import load_reference
from grader.engine.remote import StudentCodeError, backward
from grader.engine.timing import cpu_time, run_time, wall_time
from grader.worker.fixtures import build as build_fixture

__all__ = [
    # checks (grader.engine.checks): each raises CheckFailure, whose text is the student's feedback
    "CheckFailure", "expect_close", "expect_equal", "expect_scalar", "expect_raises", "expect_tensor",
    "expect_sequence", "expect_type",
    # the pieces checks are made of
    "tensor_mismatch", "equality_mismatch", "describe", "as_scalar", "tolerance", "reduction_atol",
    "unit_roundoff", "assert_outside",
    # calling the submission (grader.engine.remote)
    "StudentCodeError", "backward", "build_fixture",
    # timing (grader.engine.timing) and the banned-API test (grader.engine.banned)
    "run_time", "wall_time", "cpu_time", "expect_own_code_without_banned_apis",
    # feedback hints (grader.engine.hints), the reference outside a fixture, the project folder
    "add_hint", "load_reference", "project_root",
    # the GPT-2 tokenizer data (grader.engine.gpt2)
    "GPT2_PATTERN", "GPT2_SPECIAL_TOKENS", "gpt2_encoding", "gpt2_ranks",
    # seeded tensor makers (here)
    "randn", "randint", "seeded",
    # documentation of the plugin's fixtures and markers
    "FIXTURES", "MARKERS",
]

FIXTURES = {
    "student": "the submission, served by a sandboxed worker: `student.<stage>.<name>(...)` calls into it; "
               "its failures raise StudentCodeError (feedback as it stands). Trapped: the stage's BANNED_APIS",
    "reference": "the stage's reference module (solutions/<stage>.py), imported in the grading process",
    "device": '"cpu", and "cuda" where available: a test asking for it runs once per device, '
              "its points split evenly",
    "submission_dir": "the submission's folder (a Path), for checks that read its source as text",
    "credit": "partial credit: set `credit.fraction = 0.5` (and `credit.message`) and return",
    "leaderboard": "a list: append {'name': ..., 'value': ...} dicts for the Gradescope leaderboard",
}

MARKERS = {
    "points(n)": "the test's points (default 1), split evenly over the devices it runs on",
    "visibility(v)": 'Gradescope visibility: "visible" (default), "hidden", "after_due_date", "after_published"',
    "stage(name)": "the stage a test belongs to (default: the name of its folder)",
    "call_timeout(seconds)": "the time limit of each call into the submission in this test (default 10 s)",
}


def _shape(shape: tuple) -> tuple:
    """`randn(2, 3)` and `randn((2, 3))` alike."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        return tuple(shape[0])
    return tuple(shape)


def randn(*shape, seed: int, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
          scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    """`shift + scale · N(0, 1)` of `shape` (ints or one tuple), `dtype` on `device`.

    Drawn in float64 on the CPU from `torch.Generator().manual_seed(seed)`, then cast and
    moved: the same values on every device, and float32 inputs that are exact float64 numbers.
    """
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(*_shape(shape), generator=g, dtype=torch.float64)
    if shift:
        x = shift + x
    return x.to(device=device, dtype=dtype)


def randint(*shape, high: int, seed: int, device: str | torch.device = "cpu", low: int = 0) -> torch.Tensor:
    """int64 values uniform in [low, high) of `shape` (ints or one tuple) on `device` (token ids, targets).

    Drawn on the CPU from `torch.Generator().manual_seed(seed)`, then moved.
    """
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, _shape(shape), generator=g).to(device)


def seeded(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A `torch.Generator` on `device` seeded with `seed`, for submission functions that take one."""
    return torch.Generator(device=device).manual_seed(seed)
