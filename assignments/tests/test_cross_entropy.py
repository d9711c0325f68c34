"""Public tests of stage `cross_entropy`: run them with `llmgrade check cross_entropy`.

Every expected value below is a worked number of the handout (03-cross_entropy.md),
small enough to check by hand: logits [2.0, 1.0, 0.1], the overflow example
[1000, 999, 998], and the three-row batch with one ignored target. The hidden tests
check much more (every reduction, label smoothing, (B, T, C) logits, float64,
gradients against PyTorch's, huge logits).
"""

import math

import pytest
import torch

from grader.testing import CheckFailure, backward, expect_close, expect_raises, expect_scalar

pytestmark = pytest.mark.stage("cross_entropy")

ROW = [2.0, 1.0, 0.1]
ROW_SOFTMAX = [0.659001, 0.242433, 0.098566]          # handout section 1
ROW_LOG_SOFTMAX = [-0.417030, -1.417030, -2.317030]   # section 3
BIG = [1000.0, 999.0, 998.0]
BIG_SOFTMAX = [0.665241, 0.244728, 0.090031]          # section 2
BIG_LOG_SOFTMAX = [-0.407606, -1.407606, -2.407606]   # section 3

# The worked batch of section 5.
BATCH = [[2.0, 1.0, 0.1], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]
TARGETS = [0, 1, -100]
BATCH_NONE = [0.417030, 1.098612, 0.0]
BATCH_SUM = 1.515642
BATCH_MEAN = 0.757821
MEAN_MISTAKES = {
    "the mean is taken over all 3 positions, the ignored one included (divide by 2)": 0.505214,
    "the loss is summed, not averaged": BATCH_SUM,
    "the loss is also divided by the number of classes": BATCH_MEAN / 3,
    "the loss is not negated": -BATCH_MEAN,
}

SMOOTHED = 0.513697   # section 6: target 0, label_smoothing 0.1
SMOOTHING_MISTAKES = {
    "label smoothing gives eps/(C-1) to each other class (PyTorch: eps/C to every class)": 0.562030,
    "the smoothing term leaves out the target class": 0.499796,
    "label_smoothing is ignored": 0.417030,
}

ROW_GRAD = [-0.340999, 0.242433, 0.098566]   # section 7: softmax - one_hot


def t(values, device, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype, device=device)


# ---- softmax and log_softmax ---------------------------------------------------

def test_softmax_hand(student, device):
    """softmax([2.0, 1.0, 0.1]) is [0.6590, 0.2424, 0.0986]"""
    expect_close(student.cross_entropy.softmax(t(ROW, device)), t(ROW_SOFTMAX, device),
                 atol=1e-5, rtol=0, what="softmax([2.0, 1.0, 0.1])", mistakes={
                     "the log-softmax is returned instead": t(ROW_LOG_SOFTMAX, device)})


def test_softmax_dim(student, device):
    """softmax(x, dim=0) normalises each column"""
    x = t([ROW, BIG], device).T.contiguous()   # (3, 2): the columns are the two examples
    expected = t([ROW_SOFTMAX, BIG_SOFTMAX], device).T
    expect_close(student.cross_entropy.softmax(x, 0), expected, atol=1e-5, rtol=0,
                 what="softmax(the two examples as columns of a (3, 2) tensor, dim=0)")


def test_softmax_no_overflow(student, device):
    """softmax([1000, 999, 998]) is finite: [0.6652, 0.2447, 0.0900]"""
    got = student.cross_entropy.softmax(t(BIG, device))
    if isinstance(got, torch.Tensor) and torch.isnan(got).any():
        raise CheckFailure("softmax([1000, 999, 998]) gives NaN: exp(1000) overflows to inf; "
                           "subtract the max before exp (handout section 2)")
    expect_close(got, t(BIG_SOFTMAX, device), atol=1e-5, rtol=0, what="softmax([1000, 999, 998])")


def test_log_softmax_hand(student, device):
    """log_softmax of [2.0, 1.0, 0.1] and of [1000, 999, 998]"""
    expect_close(student.cross_entropy.log_softmax(t(ROW, device)), t(ROW_LOG_SOFTMAX, device),
                 atol=1e-5, rtol=0, what="log_softmax([2.0, 1.0, 0.1])", mistakes={
                     "the max is not added back: x - log(sum(exp(x - max)))": t([1.582970, 0.582970, -0.317030], device)})
    got = student.cross_entropy.log_softmax(t(BIG, device))
    if isinstance(got, torch.Tensor) and not torch.isfinite(got).all():
        raise CheckFailure("log_softmax([1000, 999, 998]) is not finite: subtract the max before exp "
                           "(handout section 3)")
    expect_close(got, t(BIG_LOG_SOFTMAX, device), atol=1e-4, rtol=0, what="log_softmax([1000, 999, 998])")


# ---- cross_entropy -------------------------------------------------------------

@pytest.mark.parametrize("target", [0, 1, 2])
def test_one_row(student, device, target):
    """cross_entropy of [[2.0, 1.0, 0.1]] with target {target}"""
    expected = -ROW_LOG_SOFTMAX[target]
    got = student.cross_entropy.cross_entropy(t([ROW], device), torch.tensor([target], device=device))
    expect_close(got, t(expected, device), atol=1e-5, rtol=0,
                 what=f"cross_entropy([[2.0, 1.0, 0.1]], [{target}])",
                 mistakes={"the loss is not negated": t(-expected, device)})


def test_batch_reductions(student, device):
    """cross_entropy of the handout's batch (one target ignored) for each reduction"""
    logits, targets = t(BATCH, device), torch.tensor(TARGETS, device=device)
    f = student.cross_entropy.cross_entropy
    mean = f(logits, targets)
    if isinstance(mean, (int, float)):
        raise CheckFailure("cross_entropy returned a Python number: return a tensor (no .item())")
    expect_scalar(mean, BATCH_MEAN, atol=1e-5, rtol=0, what="cross_entropy(batch, [0, 1, -100])",
                  mistakes=MEAN_MISTAKES)
    expect_scalar(f(logits, targets, reduction="sum"), BATCH_SUM, atol=1e-5, rtol=0,
                  what="cross_entropy(batch, [0, 1, -100], reduction='sum')")
    expect_close(f(logits, targets, reduction="none"), t(BATCH_NONE, device), atol=1e-5, rtol=0,
                 what="cross_entropy(batch, [0, 1, -100], reduction='none')")


def test_shape_b_t_c(student, device):
    """reduction='none' on (B, T, C) = (1, 3, 3) logits returns (1, 3)"""
    logits, targets = t([BATCH], device), torch.tensor([TARGETS], device=device)
    expect_close(student.cross_entropy.cross_entropy(logits, targets, reduction="none"),
                 t([BATCH_NONE], device), atol=1e-5, rtol=0,
                 what="cross_entropy(logits (1, 3, 3), targets (1, 3), reduction='none')")


def test_label_smoothing_hand(student, device):
    """cross_entropy of [[2.0, 1.0, 0.1]], target 0, label_smoothing 0.1 is 0.5137"""
    got = student.cross_entropy.cross_entropy(t([ROW], device), torch.tensor([0], device=device),
                                              label_smoothing=0.1)
    expect_scalar(got, SMOOTHED, atol=1e-5, rtol=0, mistakes=SMOOTHING_MISTAKES,
                  what="cross_entropy([[2.0, 1.0, 0.1]], [0], label_smoothing=0.1)")


def test_gradient_hand(student, device):
    """the gradient of cross_entropy([[2.0, 1.0, 0.1]], [0]) is softmax - one_hot"""
    x = t([ROW], device).requires_grad_()
    result = backward(student.cross_entropy.cross_entropy, x, torch.tensor([0], device=device))
    expect_close(result.input_grads[0], t([ROW_GRAD], device), atol=1e-5, rtol=0,
                 what="d cross_entropy([[2.0, 1.0, 0.1]], [0]) / d logits")


def test_unknown_reduction(student):
    """cross_entropy raises ValueError for reduction='avg'"""
    with expect_raises("ValueError", what="cross_entropy(logits, targets, reduction='avg')"):
        student.cross_entropy.cross_entropy(t(BATCH, "cpu"), torch.tensor(TARGETS), reduction="avg")


# ---- perplexity ------------------------------------------------------------------

def test_perplexity_hand(student):
    """perplexity(0.757821) is 2.1336 and perplexity(log 3) is 3"""
    expect_scalar(student.cross_entropy.perplexity(BATCH_MEAN), 2.133622, atol=1e-5, rtol=0,
                  what="perplexity(0.757821)", mistakes={"perplexity uses 2 ** loss; it is exp(loss)": 1.690935})
    expect_scalar(student.cross_entropy.perplexity(math.log(3)), 3.0, atol=1e-6, rtol=0,
                  what="perplexity(log 3)")
