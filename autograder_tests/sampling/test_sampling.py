"""Hidden tests of stage `sampling`, part 2: sample_next (greedy, exact draws, the distribution).

Exact draws are judged by sampling_draws.judge (see its docstring: a float64 or
exp / sum softmax is accepted even at a rare near-tie). Error carried forward: draws
(and counts) are also right when they follow the distribution of the student's OWN
apply_temperature, top_k_filter and top_p_filter, read back on the same logits; the
filter tests charge those mistakes, and other failures name them. The chi-square test of
`test_sample_next_distribution` has a false-failure probability below 1e-6; see CHI2_ALPHA.
"""

from __future__ import annotations

import math

import pytest
import torch

from grader.testing import CheckFailure, StudentCodeError, expect_close, randn, seeded
from sampling_draws import (check_cut, copy_of, distribution, divides_by_zero, draws_match, judge,  # helpers
                            own_distribution, trusted, upstream_note)


# ---- sample_next: greedy ------------------------------------------------------

@pytest.mark.points(2)
@pytest.mark.parametrize("filters", ["no filter", "top_k=2, top_p=0.5"])
def test_greedy(student, reference, device, filters):
    """sample_next with temperature 0 returns the argmax of each row, (B, 1) int64 ({filters})"""
    options = {} if filters == "no filter" else {"top_k": 2, "top_p": 0.5}
    logits = randn(5, 9, seed=3, device=device, scale=1.5)
    what = f"sample_next(logits (5, 9), temperature=0{''.join(f', {k}={v}' for k, v in options.items())})"
    try:
        got = student.sampling.sample_next(logits, temperature=0.0, generator=seeded(0, device), **options)
    except StudentCodeError as exc:
        if not divides_by_zero(exc):
            raise
        raise CheckFailure(f"{what}: looks like temperature 0 divides the logits by zero (or calls "
                           "apply_temperature); temperature 0 means greedy decoding: return the argmax\n"
                           f"({str(exc).splitlines()[0]})") from None
    expect_close(got, reference.sample_next(logits, temperature=0.0), what=what, mistakes={
        "the argmin is taken instead of the argmax": logits.argmin(-1, keepdim=True),
        "the result has shape (B,); keep a column: (B, 1)": logits.argmax(-1)})


# ---- sample_next: exact draws -------------------------------------------------

Z = [2.0, 1.0, 0.5, 0.0, -1.0]   # the handout's running example
CASES = {
    "T=1": dict(seed=11, rows=6, temperature=1.0),
    "T=0.6": dict(seed=12, rows=6, temperature=0.6),
    "T=1.2, top_k=3": dict(seed=13, rows=6, temperature=1.2, top_k=3),
    "T=0.8, top_p=0.75": dict(seed=14, rows=6, temperature=0.8, top_p=0.75),
    "T=1.5, top_k=6, top_p=0.6": dict(seed=15, rows=6, temperature=1.5, top_k=6, top_p=0.6),
    "the handout's z, T=0.5, top_p=0.9 (temperature first)": dict(seed=16, rows=300, temperature=0.5, top_p=0.9),
}


def case_logits(case: dict, device: str) -> torch.Tensor:
    if case["seed"] == 16:
        return torch.tensor(Z, device=device).repeat(case["rows"], 1)
    return randn(case["rows"], 10, seed=case["seed"], device=device, scale=1.5)


def options_of(case: dict) -> dict:
    return {k: case[k] for k in ("temperature", "top_k", "top_p") if k in case}


def sample_mistakes(reference, logits: torch.Tensor, start: torch.Generator, temperature=1.0,
                    top_k=None, top_p=None) -> dict:
    """What buggy samplers draw from the same generator state."""
    def draw(x):
        return lambda: torch.multinomial(torch.softmax(x, -1), 1, generator=copy_of(start))

    def filt(x, k=top_k, p=top_p, first_p=False):
        steps = [lambda y: reference.top_p_filter(y, p) if p is not None else y,
                 lambda y: reference.top_k_filter(y, k) if k is not None else y]
        for f in (steps if first_p else steps[::-1]):
            x = f(x)
        return x

    t = reference.apply_temperature
    return {
        "the temperature is applied after top-k / top-p filtering (apply it first)":
            draw(t(filt(logits), temperature)),
        "top-k is not applied": draw(filt(t(logits, temperature), k=None)),
        "top-p is not applied": draw(filt(t(logits, temperature), p=None)),
        "top-p is applied before top-k (the order is temperature, top-k, top-p)":
            draw(filt(t(logits, temperature), first_p=True)),
        "the temperature is ignored": draw(filt(logits)),
        "the logits are multiplied by the temperature instead of divided": draw(filt(logits * temperature)),
        "the argmax is taken instead of sampling": lambda: filt(t(logits, temperature)).argmax(-1, keepdim=True),
        "the draw is uniform over the kept tokens instead of following their probabilities":
            lambda: torch.multinomial(torch.isfinite(filt(t(logits, temperature))).to(logits.dtype), 1,
                                      generator=copy_of(start)),
    }


CARRIED = object()


def call_sample_next(student, reference, logits, options: dict, **kwargs):
    """student.sampling.sample_next(logits, **options, **kwargs), or CARRIED when it fails only
    because the student's own filters keep no token in some row (charged by the filter tests)."""
    try:
        return student.sampling.sample_next(logits, **options, **kwargs)
    except StudentCodeError as exc:
        own, differ = own_distribution(student, reference, logits, **options)
        if own is not None and torch.isnan(own).any(dim=-1).any():
            return CARRIED
        if own is not None:
            raise CheckFailure(f"{exc}\n({upstream_note(differ)})") from None
        raise


@pytest.mark.points(2)
@pytest.mark.parametrize("name", list(CASES))
def test_sample_next_exact(student, reference, device, name):
    """sample_next draws exactly the contract's tokens from a seeded generator: {name}"""
    case = CASES[name]
    logits, options = case_logits(case, device), options_of(case)
    start = seeded(1000 + case["seed"], device)
    gen, end = copy_of(start), copy_of(start)
    expected = reference.sample_next(logits, generator=end, **options)
    got = call_sample_next(student, reference, logits, options, generator=gen)
    if got is CARRIED:
        return
    check_cut(reference, logits, **options)
    probs = distribution(reference, logits, **options)
    try:
        judge(got, gen, start, expected, end, 1, lambda step, tokens: probs,
              f"sample_next(logits {tuple(logits.shape)}, {name}, generator)",
              sample_mistakes(reference, logits, start, **options))
    except CheckFailure as failure:
        own, differ = own_distribution(student, reference, logits, **options)
        if own is None:
            raise
        if trusted(start, expected, end, 1, lambda step, tokens: probs) and \
                draws_match(got, gen, start, 1, lambda step, tokens: own):
            return   # the draws of the student's own filters: charged by the filter tests
        raise CheckFailure(f"{failure}\n({upstream_note(differ)})") from None


@pytest.mark.points(2)
@pytest.mark.parametrize("how", ["omitted", "passed explicitly"])
def test_sample_next_defaults(student, reference, device, how):
    """sample_next with temperature, top_k and top_p {how} (1.0, None, None) draws the contract's tokens"""
    logits = randn(6, 10, seed=17, device=device, scale=1.5)
    options = {} if how == "omitted" else {"temperature": 1.0, "top_k": None, "top_p": None}
    start = seeded(1017, device)
    gen, end = copy_of(start), copy_of(start)
    expected = reference.sample_next(logits, generator=end)
    got = student.sampling.sample_next(logits, generator=gen, **options)
    probs = distribution(reference, logits, 1.0)
    text = "" if how == "omitted" else ", temperature=1.0, top_k=None, top_p=None"
    judge(got, gen, start, expected, end, 1, lambda step, tokens: probs,
          f"sample_next(logits (6, 10){text}, generator)", sample_mistakes(reference, logits, start))


@pytest.mark.parametrize("how", ["omitted", "None"])
def test_sample_next_without_generator(student, reference, device, how):
    """sample_next with generator {how} returns (B, 1) int64 ids on the device (top_k=1: the argmax)"""
    logits = randn(5, 9, seed=18, device=device, scale=1.5)
    extra = {} if how == "omitted" else {"generator": None}
    what = f"sample_next(logits (5, 9), top_k=1{', generator=None' if extra else ''})"
    got = call_sample_next(student, reference, logits, {"top_k": 1}, **extra)
    if got is CARRIED:
        return
    try:
        expect_close(got, logits.argmax(-1, keepdim=True), what=what + " (only the argmax is left to draw)")
    except CheckFailure as failure:
        # Error carried forward: any token the student's own top_k_filter leaves is accepted.
        own, differ = own_distribution(student, reference, logits, top_k=1)
        if own is None:
            raise
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (5, 1) and got.dtype == torch.int64 \
                and got.device.type == logits.device.type and bool(((got >= 0) & (got < 9)).all()) \
                and bool((own.gather(-1, got.cpu()) > 0).all()):
            return
        raise CheckFailure(f"{failure}\n({upstream_note(differ)})") from None


# ---- sample_next: the distribution --------------------------------------------

DRAWS = 20_000
# Pearson's statistic sum((n_i - N p_i)^2 / (N p_i)) over the kept tokens is, for a
# correct sampler, asymptotically chi-square with (kept - 1) degrees of freedom; every
# expected count here is above 1,200, where that approximation is very close. The test
# fails above the chi-square quantile at 1e-9 (computed exactly below, by bisection on the
# regularized upper incomplete gamma function torch.special.gammaincc): a 1000x margin
# under the promised false-failure probability of 1e-6 for any error of the approximation
# in the far tail. Critical values: 44.84 (df 3, the top-k case), 41.45 (df 2, the top-p
# case), against 30.66 / 27.63 at 1e-6. The mistakes named below sit far above them
# (noncentrality >= 1,000, or a token of probability 0 drawn).
CHI2_ALPHA = 1e-9

STAT_CASES = {
    "T=0.7, top_k=4": dict(logits=[1.5, 1.0, 0.4, 0.0, -0.3, -1.0], temperature=0.7, top_k=4),
    # Temperature first keeps 3 tokens; temperature last keeps 4, dropping the crossing token keeps 2.
    "T=0.6, top_p=0.8": dict(logits=[1.2, 0.9, 0.5, 0.1, -0.2, -0.6, -1.1], temperature=0.6, top_p=0.8),
}


def chi2_critical(df: int, alpha: float = CHI2_ALPHA) -> float:
    """x with P(chi-square(df) > x) = alpha, by bisection on Q(df / 2, x / 2)."""
    tail = lambda x: torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),  # noqa: E731
                                             torch.tensor(x / 2, dtype=torch.float64)).item()
    lo, hi = 0.0, 1000.0
    assert tail(hi) < alpha
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail(mid) > alpha else (lo, mid)
    return hi


def chi2(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's statistic of counts against probs; inf when a token of probability 0 was drawn."""
    if (counts[probs == 0] > 0).any():
        return math.inf
    kept = probs > 0
    expected = probs[kept] * counts.sum()
    return float(((counts[kept] - expected) ** 2 / expected).sum())


@pytest.mark.points(4)
@pytest.mark.parametrize("name", list(STAT_CASES))
def test_sample_next_distribution(student, reference, device, name):
    """sample_next's 20,000 draws pass a chi-square test of the contract's distribution: {name}"""
    case = dict(STAT_CASES[name])
    logits = torch.tensor(case.pop("logits"), device=device).repeat(DRAWS, 1)
    what = f"sample_next({DRAWS} copies of logits {STAT_CASES[name]['logits']}, {name})"
    got = call_sample_next(student, reference, logits, case, generator=seeded(7, device))
    if got is CARRIED:
        return
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (DRAWS, 1) or got.dtype != torch.int64:
        expect_close(got, torch.zeros(DRAWS, 1, dtype=torch.int64, device=device), what=what)
    V = logits.shape[1]
    counts = torch.bincount(got.flatten().cpu().clamp(0, V), minlength=V + 1)[:V].double()
    probs = distribution(reference, logits[:1], **case)[0]
    critical = chi2_critical(int((probs > 0).sum()) - 1)
    statistic = chi2(counts, probs)
    if statistic <= critical:
        return
    own, differ = own_distribution(student, reference, logits[:1], **case)
    if own is not None and chi2(counts, own[0]) <= chi2_critical(max(int((own[0] > 0).sum()) - 1, 1)):
        return   # the distribution of the student's own filters: charged by the filter tests
    note = f"\n({upstream_note(differ)})" if own is not None else ""
    t, k, p = case["temperature"], case.get("top_k"), case.get("top_p")
    plain = distribution(reference, logits[:1], t)[0]
    top1 = torch.nn.functional.one_hot(probs.argmax(), V).double()
    before = distribution(reference, logits[:1], t, k)[0]    # what top-p sees
    by_rank = before.sort(descending=True)
    without_crossing = torch.zeros_like(before).scatter(0, by_rank.indices, by_rank.values * (
        by_rank.values.cumsum(0) < (p or 2.0)))
    alternatives = {
        "the temperature is not applied": distribution(reference, logits[:1], 1.0, k, p)[0],
        "top-k is not applied" if k else "top-p is not applied": plain,
        "the draw is uniform over the kept tokens instead of following their probabilities":
            (probs > 0).double() / (probs > 0).sum(),
        "the temperature is applied after filtering (apply it first)": torch.softmax(
            reference.top_p_filter(reference.top_k_filter(logits[:1].double().cpu(), k or V), p or 1.0) / t, -1)[0],
        "the token whose probability crosses p is dropped (it must be kept)":
            without_crossing / without_crossing.sum() if without_crossing.sum() > 0 else top1,
        "the argmax is taken instead of sampling": top1,
    }
    counts_text = ", ".join(f"{int(c)}" for c in counts)
    expected_text = ", ".join(f"{DRAWS * q:.0f}" for q in probs.tolist())
    problem = (f"the token counts [{counts_text}] do not follow the expected distribution (expected about "
               f"[{expected_text}]; chi-square {statistic:.1f} > {critical:.1f})")
    for description, alternative in alternatives.items():
        if not torch.allclose(alternative, probs, atol=1e-3) and chi2(counts, alternative) <= critical:
            raise CheckFailure(f"{what}: looks like {description}\n({problem}){note}")
    raise CheckFailure(f"{what}: {problem}{note}")
