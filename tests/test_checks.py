"""The tensor-aware checks: what they accept, and what their messages say."""

import math

import numpy as np

import pytest
import torch

from grader.engine.checks import (CheckFailure, expect_close, expect_equal, expect_raises, expect_scalar,
                           tensor_mismatch, tolerance)
from grader.engine.remote import StudentCodeError
from grader.worker.client import StudentException


def test_shape_dtype_and_kind_are_reported_first():
    expected = torch.zeros(2, 4, 8)
    assert tensor_mismatch(torch.zeros(2, 8, 4), expected) == "expected shape (2, 4, 8), got (2, 8, 4)"
    assert tensor_mismatch(torch.zeros(2, 4, 8, dtype=torch.float64), expected) == \
        "expected dtype torch.float32, got torch.float64"
    assert tensor_mismatch([0.0], expected).startswith("expected a tensor, got a list")


def test_values_report_the_worst_index_and_the_tolerance():
    expected = torch.zeros(2, 3, 6)
    actual = expected.clone()
    actual[0, 2, 5] = 0.31
    message = tensor_mismatch(actual, expected)
    assert message.startswith("max abs error 0.31 at index (0, 2, 5)") and "1 of 36 entries differ" in message


def test_float32_tolerance_covers_drift_but_not_near_misses():
    atol, rtol = tolerance(torch.float32)
    x = torch.linspace(-3, 3, 101, dtype=torch.float64)
    exact = torch.nn.functional.gelu(x)
    assert tensor_mismatch(exact.float(), exact.float()) is None
    assert tensor_mismatch((exact + 1e-6).float(), exact.float()) is None            # honest drift
    tanh = torch.nn.functional.gelu(x, approximate="tanh")
    assert tensor_mismatch(tanh.float(), exact.float()) is not None                # 4.7e-4: a real mistake
    assert (atol, rtol) == (1e-5, 1e-4)


def test_nan_and_inf():
    expected = torch.tensor([1.0, math.inf, math.nan])
    assert "NaN value(s)" in tensor_mismatch(torch.tensor([1.0, math.inf, 0.0]), torch.tensor([1.0, math.inf, 0.0]).where(
        torch.tensor([True, True, False]), torch.tensor(math.nan)))
    assert tensor_mismatch(torch.tensor([1.0, math.inf, math.nan]), expected, equal_nan=True) is None
    assert tensor_mismatch(torch.tensor([1.0, math.inf, 2.0]), expected, equal_nan=True).startswith(
        "expected NaN at index (2,)")
    assert tensor_mismatch(torch.tensor([1.0, -math.inf, math.nan]), expected, equal_nan=True) is not None


def test_a_known_mistake_is_named():
    expected = torch.tensor([0.5, 0.5])
    buggy = torch.tensor([1.0, 1.0])
    with pytest.raises(CheckFailure, match="looks like the rows are not normalised"):
        expect_close(buggy, expected, what="probs", mistakes={
            "something else": torch.tensor([9.0, 9.0]),
            "a mistake that does not apply here": lambda: 1 / 0,
            "the rows are not normalised": lambda: buggy.clone()})
    with pytest.raises(CheckFailure, match=r"^probs: max abs error"):
        expect_close(torch.tensor([0.7, 0.3]), expected, what="probs", mistakes={"x": buggy})


def test_scalar_and_equality_checks():
    expect_scalar(torch.tensor(2.0), 2.0, what="nll")
    with pytest.raises(CheckFailure, match="expected a number, got a str"):
        expect_scalar("2.0", 2.0, what="nll")
    with pytest.raises(CheckFailure, match="looks like the log is base 2"):
        expect_scalar(2 / math.log(2), 2.0, what="nll", mistakes={"the log is base 2": 2 / math.log(2)})
    with pytest.raises(CheckFailure, match="at key 'b': got 3, expected 2"):
        expect_equal({"a": 1, "b": 3}, {"a": 1, "b": 2}, what="stoi")
    with pytest.raises(CheckFailure, match="expected 2 items, got 3"):
        expect_equal([1, 2, 3], [1, 2], what="words")


def test_expect_raises_accepts_subclasses_and_explains_the_rest():
    def student_error(name, mro):
        return StudentCodeError("f(...)", StudentException(name, mro, "boom", ""))

    with expect_raises("IndexError", what="f(99)"):
        raise student_error("IndexError", ["IndexError", "LookupError", "Exception"])
    with pytest.raises(CheckFailure, match="should raise ValueError, but raised KeyError: boom"):
        with expect_raises("ValueError", what="f(-1)"):
            raise student_error("KeyError", ["KeyError", "Exception"])
    with pytest.raises(CheckFailure, match="but it returned normally"):
        with expect_raises("ValueError", what="f(-1)"):
            pass


# ---- reduction_atol: float32 accumulated in any order stays inside ------------------------

def _float32_running_sum(values) -> float:
    total = np.float32(0.0)
    for v in values:               # one rounding per addition, as a student's Python loop does
        total = np.float32(total + np.float32(v))
    return float(total)


@pytest.mark.parametrize("order", ["given", "ascending", "descending"])
def test_reduction_atol_covers_a_float32_running_mean_in_any_order(order):
    """The makemore-style loop: 29k float32 log-probabilities added one by one, then averaged."""
    from grader.engine.checks import reduction_atol
    rng = np.random.default_rng(0)
    terms = -np.log(rng.uniform(0.01, 0.5, size=29_000)).astype(np.float32)
    if order != "given":
        terms = np.sort(terms)[::-1 if order == "descending" else 1]
    exact = float(np.sum(terms.astype(np.float64))) / len(terms)
    loop = _float32_running_sum(terms) / len(terms)
    atol = reduction_atol(len(terms), float(np.abs(terms).mean()))
    assert abs(loop - exact) <= atol
    # ... and the same loop is outside the old fixed 1e-6 + 1e-5·|x| here or close to it,
    # while a 1 % mistake (a dropped term in a hundred) is well outside the new bound.
    assert 0.01 * exact > 5 * atol


def test_reduction_atol_grows_with_terms_and_never_undercuts_one_term():
    from grader.engine.checks import reduction_atol, unit_roundoff
    assert reduction_atol(1, 1.0) >= 4 * unit_roundoff()
    assert reduction_atol(10_000, 1.0) > reduction_atol(100, 1.0)
    assert reduction_atol(100, 1.0, dtype=torch.float64) < reduction_atol(100, 1.0) * 1e-8
    assert reduction_atol(2 ** 25, 1.0) == math.inf


def test_assert_outside_refuses_a_tolerance_that_swallows_a_named_mistake():
    from grader.engine.checks import assert_outside
    expected = torch.ones(3)
    mistakes = {"off by 1e-3": expected + 1e-3, "cannot arise here": lambda: 1 / 0}
    assert_outside(expected, mistakes, atol=1e-4, rtol=0)          # the mistake stays outside
    with pytest.raises(AssertionError, match="off by 1e-3"):
        assert_outside(expected, mistakes, atol=1e-2, rtol=0)


def test_assert_outside_runs_only_where_the_tests_are_proved(monkeypatch):
    """selfcheck and these tests prove the tolerances (LLMGRADE_PROVE_TOLERANCES=1); a student's
    grading skips the proof (same inputs for every submission) and never computes the mistakes."""
    from grader.engine.checks import PROVE_TOLERANCES, assert_outside
    computed = []
    mistakes = {"swallowed": lambda: computed.append(1) or torch.ones(3)}
    monkeypatch.delenv(PROVE_TOLERANCES, raising=False)
    assert_outside(torch.ones(3), mistakes, atol=1e-2)
    assert computed == []
    monkeypatch.setenv(PROVE_TOLERANCES, "1")
    with pytest.raises(AssertionError, match="swallowed"):
        assert_outside(torch.ones(3), mistakes, atol=1e-2)
