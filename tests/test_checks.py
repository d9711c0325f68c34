"""The tensor-aware checks: what they accept, and what their messages say."""

import math

import pytest
import torch

from grader.checks import (CheckFailure, expect_close, expect_equal, expect_raises, expect_scalar,
                           tensor_mismatch, tolerance)
from grader.remote import StudentCodeError
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
