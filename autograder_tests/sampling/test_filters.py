"""Hidden tests of stage `sampling`, part 1: apply_temperature, top_k_filter, top_p_filter.

The filters are deterministic, so they are compared exactly (kept logits unchanged,
removed ones -inf) with the reference run in float64. Inputs avoid ties at the
top-p cut and p within 1e-3 of a partial sum (the contract leaves both open),
which the helpers assert. Each known mistake is written as what the buggy code
would return for the same inputs.
"""

import math

import pytest
import torch

from grader.testing import expect_close, expect_raises, randn, reduction_atol

INF = math.inf


def expected(fn, logits: torch.Tensor, *args) -> torch.Tensor:
    """The reference's result computed in float64, returned in the input's dtype and device."""
    return fn(logits.double(), *args).to(logits.dtype)


# ---- known mistakes, as what they would produce ------------------------------

def _mask(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~keep, -INF)


def top_k_mistakes(logits: torch.Tensor, k: int) -> dict:
    x = logits.double()
    V = x.shape[-1]

    def exactly_k():
        keep = torch.zeros_like(x, dtype=torch.bool).scatter(-1, torch.topk(x, k, dim=-1).indices, True)
        return _mask(logits, keep)

    kth = lambda j: torch.topk(x, j, dim=-1).values[..., -1:]  # noqa: E731
    return {
        "a token tied with the k-th largest logit is dropped (ties must be kept: compare with the "
        "k-th largest VALUE)": exactly_k,
        "the k SMALLEST logits are kept": lambda: _mask(logits, x <= torch.topk(x, k, dim=-1, largest=False)
                                                        .values[..., -1:]),
        "one token too few is kept (the k-th largest itself must be kept)": lambda: _mask(logits, x > kth(k)),
        "one token too many is kept (k + 1)": lambda: _mask(logits, x >= kth(min(k + 1, V))),
        "removed logits are set to 0 instead of -inf": lambda: logits.masked_fill(x < kth(k), 0.0),
        "the filter keeps the largest values of each COLUMN (dim=0) instead of each row":
            lambda: _mask(logits, x >= torch.topk(x, min(k, x.shape[0]), dim=0).values[-1:]),
    }


def _sorted_probs(x: torch.Tensor, descending: bool = True):
    sorted_x, order = torch.sort(x, dim=-1, descending=descending)
    probs = torch.softmax(sorted_x, dim=-1)
    return probs, probs.cumsum(-1), order


def _unsort(keep_sorted: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def top_p_mistakes(logits: torch.Tensor, p: float, top1_first: bool = False) -> dict:
    x = logits.double()
    probs, cum, order = _sorted_probs(x)
    up_probs, up_cum, up_order = _sorted_probs(x, descending=False)
    # Hugging Face's shift-right rule without its `remove[..., 0] = False` line.
    no_top1 = torch.cat([cum[..., :1] > p, (cum > p)[..., :-1]], dim=-1)
    crossing = {"the token whose probability crosses p is dropped (it must be kept)":
                lambda: _mask(logits, _unsort(cum < p, order))}
    top1 = {"the most probable token is not always kept (here nothing is kept; when p is below the top "
            "probability, that is also what happens if the token whose probability crosses p is dropped: "
            "it is the most probable one, and it must be kept)":
            lambda: _mask(logits, _unsort(~no_top1, order))}
    others = {
        "the probabilities are sorted ascending (sort with descending=True)":
            lambda: _mask(logits, _unsort(up_cum - up_probs < p, up_order)),
        "the keep/drop decision is not scattered back to the original token order (it is applied to "
        "the sorted positions)": lambda: _mask(logits, cum - probs < p),
        "removed logits are set to 0 instead of -inf":
            lambda: logits.masked_fill(~_unsort(cum - probs < p, order), 0.0),
    }
    return (top1 | crossing | others) if top1_first else (crossing | top1 | others)


def float32_p_one(logits: torch.Tensor) -> torch.Tensor:
    """What the general top-p rule computes in float32 for p == 1, without the special case."""
    probs, cum, order = _sorted_probs(logits.float())
    return _mask(logits, _unsort(cum - probs < 1.0, order))


def cut_bound(V: int) -> float:
    """How far a float32 cumulative sum of V sorted probabilities can be from the exact one, in
    any order: each probability carries its softmax sum's γ_{V+4} relative error and the running
    sum adds γ_{V+4}·1 (grader.engine.checks.reduction_atol): 2·γ_{V+4}, 1.7e-6 for V = 10, 6.0e-3
    for V = 50257."""
    return 2 * reduction_atol(V, 1.0)


def check_no_cut_ambiguity(logits: torch.Tensor, p: float) -> None:
    """Grader self-check: p is at least 1e-3 (far more than cut_bound) away from every partial
    sum, no tie at the cut."""
    probs, cum, _ = _sorted_probs(logits.double().cpu())
    margin = max(1e-3, cut_bound(logits.shape[-1]))
    assert (cum - p).abs().min() > margin, f"grader: p={p} is within {margin:g} of a partial sum"
    assert (probs[..., :-1] - probs[..., 1:]).min() > 1e-7, "grader: tie in the probabilities"


# ---- apply_temperature --------------------------------------------------------

@pytest.mark.points(2)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 0.73])
def test_temperature(student, reference, device, temperature):
    """apply_temperature divides (B, V) float32 logits by T = {temperature}"""
    logits = randn(3, 7, seed=1, device=device, scale=2.0)
    expect_close(student.sampling.apply_temperature(logits, temperature),
                 expected(reference.apply_temperature, logits, temperature),
                 what=f"apply_temperature(logits, {temperature})", mistakes={
                     "the logits are multiplied by the temperature instead of divided": logits * temperature,
                     "the temperature is ignored": logits})


def test_temperature_float64_and_3d(student, reference, device):
    """apply_temperature keeps float64 and any (..., V) shape"""
    logits = randn(2, 3, 5, seed=2, device=device, dtype=torch.float64, scale=2.0)
    expect_close(student.sampling.apply_temperature(logits, 0.8), reference.apply_temperature(logits, 0.8),
                 what="apply_temperature(float64 logits (2, 3, 5), 0.8)")


@pytest.mark.parametrize("temperature", [0.0, -0.5])
def test_temperature_rejects(student, temperature):
    """apply_temperature raises ValueError for T = {temperature}"""
    with expect_raises("ValueError", what=f"apply_temperature(logits, {temperature})"):
        student.sampling.apply_temperature(torch.zeros(2, 3), temperature)


# ---- top_k_filter -------------------------------------------------------------

@pytest.mark.points(3)
@pytest.mark.parametrize("k", [1, 3, 7])
def test_top_k_batched(student, reference, device, k):
    """top_k_filter keeps the {k} largest logits of each row of (4, 9) float32 logits"""
    logits = randn(4, 9, seed=10 + k, device=device, scale=2.0)
    expect_close(student.sampling.top_k_filter(logits, k), expected(reference.top_k_filter, logits, k),
                 what=f"top_k_filter(logits (4, 9), {k})", mistakes=top_k_mistakes(logits, k))


@pytest.mark.points(3)
def test_top_k_ties(student, reference, device):
    """top_k_filter keeps every logit tied with the k-th largest"""
    logits = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0, -2.0],     # k = 2: 3, 1, 1, 1 kept
                           [2.0, 2.0, 2.0, 1.0, 0.0, -1.0],     # k = 2: the three 2s kept
                           [0.5, -1.0, 0.5, 4.0, 0.5, -1.0],    # k = 2: 4 and the three 0.5s
                           [1.0, 0.0, 2.0, -1.0, 3.0, -2.0]],   # k = 2: no tie
                          device=device)
    expect_close(student.sampling.top_k_filter(logits, 2), expected(reference.top_k_filter, logits, 2),
                 what="top_k_filter(logits with ties, 2)", mistakes=top_k_mistakes(logits, 2))


@pytest.mark.parametrize("k", [9, 20])
def test_top_k_large_k(student, device, k):
    """top_k_filter with k = {k} >= V = 9 returns the logits unchanged"""
    logits = randn(3, 9, seed=4, device=device, scale=2.0)
    expect_close(student.sampling.top_k_filter(logits, k), logits, what=f"top_k_filter(logits (3, 9), {k})")


def test_top_k_3d_float64(student, reference, device):
    """top_k_filter works on (2, 3, 8) float64 logits, row by row"""
    logits = randn(2, 3, 8, seed=5, device=device, dtype=torch.float64, scale=2.0)
    expect_close(student.sampling.top_k_filter(logits, 3), reference.top_k_filter(logits, 3),
                 what="top_k_filter(float64 logits (2, 3, 8), 3)", mistakes=top_k_mistakes(logits, 3))


# ---- top_p_filter -------------------------------------------------------------

@pytest.mark.points(3)
@pytest.mark.parametrize("p", [0.55, 0.85, 0.93])
def test_top_p_batched(student, reference, device, p):
    """top_p_filter keeps the nucleus of mass p = {p} in each row of (4, 10) float32 logits"""
    logits = randn(4, 10, seed=21, device=device, scale=2.0)
    check_no_cut_ambiguity(logits, p)
    expect_close(student.sampling.top_p_filter(logits, p), expected(reference.top_p_filter, logits, p),
                 what=f"top_p_filter(logits (4, 10), {p})", mistakes=top_p_mistakes(logits, p))


@pytest.mark.points(2)
def test_top_p_keeps_crossing_token(student, reference, device):
    """top_p_filter keeps the token whose probability crosses p"""
    # probabilities 0.5, 0.3, 0.15, 0.05: p = 0.7 keeps 2 tokens (0.5 + 0.3 crosses it)
    logits = torch.tensor([[0.5, 0.15, 0.3, 0.05], [0.05, 0.3, 0.15, 0.5]], device=device).log()
    check_no_cut_ambiguity(logits, 0.7)
    expect_close(student.sampling.top_p_filter(logits, 0.7), expected(reference.top_p_filter, logits, 0.7),
                 what="top_p_filter(log([0.5, 0.15, 0.3, 0.05]), 0.7)", mistakes=top_p_mistakes(logits, 0.7))


@pytest.mark.points(2)
@pytest.mark.parametrize("p", [1e-4, 0.2])
def test_top_p_keeps_top1(student, reference, device, p):
    """top_p_filter with p = {p}, below the largest probability, keeps exactly the top token"""
    logits = randn(5, 8, seed=31, device=device, scale=1.0)
    logits[torch.arange(5), torch.tensor([0, 3, 7, 5, 2])] += 3.0
    check_no_cut_ambiguity(logits, p)
    assert (torch.softmax(logits.double(), -1).amax(-1) > p).all(), "grader: p must be below the top probability"
    expect_close(student.sampling.top_p_filter(logits, p), expected(reference.top_p_filter, logits, p),
                 what=f"top_p_filter(logits (5, 8), {p})", mistakes=top_p_mistakes(logits, p, top1_first=True))


def test_top_p_one_unchanged(student, device):
    """top_p_filter with p = 1 returns the logits unchanged, tiny tail included"""
    # In float32 the cumulative sum reaches 1.0 before the tail: only the p == 1 case keeps it.
    logits = torch.tensor([[10.0, 0.0, -10.0, -20.0, -30.0], [-30.0, 9.0, -12.0, 8.5, -25.0]], device=device)
    expect_close(student.sampling.top_p_filter(logits, 1.0), logits, what="top_p_filter(logits, 1.0)",
                 mistakes={"p == 1 drops the tiny tail: the cumulative sum rounds to 1.0 before the last "
                           "tokens in float32 (return the logits unchanged when p == 1)":
                           float32_p_one(logits)})


def test_top_p_3d_float64_and_inf(student, reference, device):
    """top_p_filter works on (2, 2, 6) float64 logits that already hold -inf"""
    logits = randn(2, 2, 6, seed=41, device=device, dtype=torch.float64, scale=1.0)
    logits[0, 1, 2] = logits[1, 0, 0] = -INF
    check_no_cut_ambiguity(logits, 0.85)
    expect_close(student.sampling.top_p_filter(logits, 0.85), reference.top_p_filter(logits, 0.85),
                 what="top_p_filter(float64 logits (2, 2, 6) with -inf, 0.85)",
                 mistakes=top_p_mistakes(logits, 0.85))


@pytest.mark.points(2)
@pytest.mark.parametrize("p", [0.5, 0.9])
def test_top_p_large_vocabulary(student, device, p):
    """top_p_filter over GPT-2's 50257 tokens, float32 logits (2, 50257), p = {p}"""
    # With 50257 probabilities of ~1e-5 each many partial sums lie near p, closer than a float32
    # cumulative sum can resolve (cut_bound(50257) = 6.0e-3). Both outcomes are accepted for every
    # token whose mass before it is within that bound of p; the others are decided: tokens with
    # mass before < p - bound are kept, those with mass before >= p + bound removed. Named
    # mistakes that still show (asserted): ascending order, no scatter back, 0 instead of -inf.
    # Dropping the crossing token cannot show here (it is in the band); the small tests charge it.
    V = 50257
    logits = randn(2, V, seed=51, device=device, scale=3.0)
    x = logits.double().cpu()
    probs, cum, order = _sorted_probs(x)
    before = cum - probs
    bound = cut_bound(V)
    keep = _unsort(before < p - bound, order)   # the most probable token included (0 before it)
    band = _unsort((before - p).abs() <= bound, order)
    got = student.sampling.top_p_filter(logits, p)
    what = f"top_p_filter(logits (2, {V}), {p})"
    mistakes = {d: m for d, m in top_p_mistakes(logits, p).items()
                if "ascending" in d or "scattered" in d or "set to 0" in d}
    decided = lambda value: torch.where(band.to(value.device), logits, value)  # noqa: E731
    expected = _mask(logits, keep.to(logits.device))
    for description, produce in mistakes.items():
        assert (decided(produce()) != decided(expected)).any(), f"grader: {description!r} does not show"
    if not isinstance(got, torch.Tensor) or got.shape != logits.shape:
        expect_close(got, expected, what=what)
    # In the band, either outcome: take the student's (the kept logit itself, or -inf).
    either = band.to(logits.device) & ((got == logits) | (got == -INF))
    expect_close(torch.where(either, logits, got), torch.where(either, logits, expected), what=what,
                 mistakes={d: (lambda m=m: torch.where(either, logits, m())) for d, m in mistakes.items()})


@pytest.mark.parametrize("p", [0.0, -0.1, 1.01, 2.0])
def test_top_p_rejects(student, p):
    """top_p_filter raises ValueError for p = {p}"""
    with expect_raises("ValueError", what=f"top_p_filter(logits, {p})"):
        student.sampling.top_p_filter(torch.zeros(2, 4), p)
