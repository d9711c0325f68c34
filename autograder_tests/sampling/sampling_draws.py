"""Helpers shared by the sampling tests: exact draws from a seeded generator.

The contract fixes how a token is drawn: one
torch.multinomial(softmax(logits), 1, generator=generator) call on the (B, V) batch
per step. With one sample, multinomial returns argmax_i p_i / E_i over fresh Exp(1)
draws E (`empty_like(probs).exponential_(generator=...)`), so a softmax computed
differently (float64, exp / sum) can change a token only at a near-tie of p_i / E_i.
`Draws` replays those exponentials from a copy of the generator and accepts, besides
the reference's own tokens, any token whose p / E (p in float64, with the student's
own earlier tokens as context) is within a relative 1e-5 of the row's maximum, and
requires the generator to end where one such draw per row per step leaves it. It
checks first that the replay reproduces the reference exactly; if a future PyTorch
draws another way, only the reference's tokens are accepted.
"""

from __future__ import annotations

import torch

from grader.testing import CheckFailure, StudentCodeError, expect_close, expect_equal, reduction_atol

# A float32 softmax over V tokens is within γ_{V+4} relative of the exact one in any order
# (its sum S: grader.engine.checks.reduction_atol), so p_i / E_i moves by at most ~2·γ_{V+4}: 1.7e-6
# for V = 10 or 11, well under 1e-5; near_tie(V) keeps 1e-5 or that bound, whichever is larger.
NEAR_TIE = 1e-5


def near_tie(V: int) -> float:
    return max(NEAR_TIE, 2 * reduction_atol(V, 1.0))


def cut_margin(V: int) -> float:
    """How far top_p must stay from every partial sum of the sorted probabilities: a float32
    cumulative sum of V probabilities (each within γ_{V+4} relative) is within 2·γ_{V+4} of the
    exact one in any order (1.7e-6 for V = 10); 1e-4 is kept as the floor."""
    return max(1e-4, 2 * reduction_atol(V, 1.0))


def divides_by_zero(exc: StudentCodeError) -> bool:
    """Whether a temperature-0 call failed the way dividing the logits by 0 fails."""
    return (exc.is_a("ValueError") or exc.is_a("ZeroDivisionError")
            or "probability tensor contains" in str(exc))


def copy_of(gen: torch.Generator) -> torch.Generator:
    clone = torch.Generator(device=gen.device)
    clone.set_state(gen.get_state())
    return clone


def same_state(a: torch.Generator, b: torch.Generator) -> bool:
    return torch.equal(a.get_state(), b.get_state())


def check_cut(reference, logits: torch.Tensor, temperature: float, top_k=None, top_p=None) -> None:
    """Grader self-check: no partial sum of the top-p step within 1e-4 of top_p (the contract's promise)."""
    if top_p is None or temperature == 0:
        return
    x = reference.apply_temperature(logits.double().cpu(), temperature)
    x = reference.top_k_filter(x, top_k) if top_k is not None else x
    cum = torch.softmax(x, -1).sort(-1, descending=True).values.cumsum(-1)
    assert (cum - top_p).abs().min() > cut_margin(x.shape[-1]), "grader: top_p is within the margin of a partial sum"


def distribution(reference, logits: torch.Tensor, temperature: float, top_k=None, top_p=None) -> torch.Tensor:
    """The contract's sampling distribution, in float64 on the CPU: (B, V)."""
    x = reference.apply_temperature(logits.double().cpu(), temperature)
    if top_k is not None:
        x = reference.top_k_filter(x, top_k)
    if top_p is not None:
        x = reference.top_p_filter(x, top_p)
    return torch.softmax(x, dim=-1)


class Draws:
    """The exponentials `steps` multinomial calls on (B, V) probabilities draw from `gen`."""

    def __init__(self, gen: torch.Generator, shape: tuple[int, int], steps: int, dtype: torch.dtype):
        replay = copy_of(gen)
        self.exps = [torch.empty(shape, dtype=dtype, device=gen.device).exponential_(1, generator=replay)
                     .double().cpu() for _ in range(steps)]
        self.end_state = replay.get_state()

    def accepts(self, step: int, probs: torch.Tensor, tokens: torch.Tensor) -> bool:
        ratio = probs / self.exps[step]
        chosen = ratio.gather(-1, tokens.view(-1, 1).cpu()).squeeze(-1)
        return bool(((chosen > 0) & (chosen >= (1 - near_tie(probs.shape[-1])) * ratio.amax(-1))).all())


def judge(got, gen: torch.Generator, start: torch.Generator, expected: torch.Tensor, end: torch.Generator,
          steps: int, step_probs, what: str, mistakes: dict) -> None:
    """Fail unless `got` holds the draws the contract makes (see the module docstring).

    expected, end: the reference's output and its generator afterwards; gen: the student's
    generator afterwards; start: the generator before. The last `steps` columns are the
    draws; step_probs(step, tokens) gives that step's (B, V) float64 probabilities with
    `tokens` as the context.
    """
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape or got.dtype != expected.dtype \
            or got.device.type != expected.device.type:
        expect_close(got, expected, what=what, mistakes=mistakes)   # names what is off
    if torch.equal(got.cpu(), expected.cpu()) and same_state(gen, end):
        return
    if trusted(start, expected, end, steps, step_probs) and draws_match(got, gen, start, steps, step_probs):
        return  # the same draws, up to float rounding at a near-tie
    unused = same_state(gen, start)
    if torch.equal(got.cpu(), expected.cpu()) and not unused:
        raise CheckFailure(f"{what}: the tokens are right but the generator ends in another state: draw "
                           "exactly once per step, with ONE torch.multinomial(probs, 1, generator=generator) "
                           "call on the whole (B, V) batch")
    try:
        expect_equal(got, expected, what=what, mistakes=mistakes)
    except CheckFailure as failure:
        if unused and "looks like" not in str(failure):
            raise CheckFailure(f"{what}: looks like the tokens are drawn without `generator` (from the "
                               "global random generator): the generator passed in was never used; pass "
                               f"generator=generator to torch.multinomial\n({failure})") from None
        raise
    raise CheckFailure(f"{what}: the generator passed in was never used (the tokens come from the global "
                       "random generator): pass generator=generator to torch.multinomial")


def trusted(start: torch.Generator, expected: torch.Tensor, end: torch.Generator, steps: int, step_probs) -> bool:
    """Whether replaying the exponentials reproduces the reference's own draws (this PyTorch's
    multinomial draws as the module docstring says)."""
    shape = tuple(step_probs(0, expected).shape)
    replay = Draws(start, shape, steps, torch.float32)
    width = expected.shape[1]
    return torch.equal(replay.end_state, end.get_state()) and all(
        replay.accepts(s, step_probs(s, expected), expected[:, width - steps + s]) for s in range(steps))


def draws_match(got, gen: torch.Generator, start: torch.Generator, steps: int, step_probs) -> bool:
    """Whether the last `steps` columns of `got` are the draws one multinomial call per step makes
    from step_probs(step, got) with the generator `start`, leaving it where `gen` is."""
    if not isinstance(got, torch.Tensor) or got.dim() != 2 or got.shape[1] < steps:
        return False
    shape = tuple(step_probs(0, got).shape)
    if got.shape[0] != shape[0] or not bool(((got >= 0) & (got < shape[1])).all()):
        return False
    width = got.shape[1]
    return any(torch.equal(replay.end_state, gen.get_state()) and all(
        replay.accepts(s, step_probs(s, got), got[:, width - steps + s]) for s in range(steps))
        for replay in (Draws(start, shape, steps, dtype) for dtype in (torch.float32, torch.float64)))


# ---- error carried forward: the student's own temperature and filters ----------------------

FILTER_TESTS = {"apply_temperature": "'apply_temperature divides (B, V) float32 logits by T = ...'",
                "top_k_filter": "'top_k_filter keeps the k largest logits of each row ...' (and its ties test)",
                "top_p_filter": "'top_p_filter keeps the nucleus of mass p = ...' (and its other tests)"}


def own_distribution(student, reference, logits: torch.Tensor, temperature: float = 1.0, top_k=None, top_p=None):
    """The distribution of the student's OWN apply_temperature, top_k_filter and top_p_filter
    (read back, in that order; float64 CPU (B, V)) and the names of those that differ from the
    reference's here; (None, []) when one of them fails or nothing differs."""
    steps = [("apply_temperature", temperature)] + ([("top_k_filter", top_k)] if top_k is not None else []) \
        + ([("top_p_filter", top_p)] if top_p is not None else [])
    x, differ = logits, []
    for name, arg in steps:
        try:
            y = getattr(student.sampling, name)(x, arg)
        except StudentCodeError:
            return None, []
        if not isinstance(y, torch.Tensor) or y.shape != x.shape or not y.is_floating_point():
            return None, []
        right = getattr(reference, name)(x.double().cpu(), arg)
        if not torch.equal(torch.isinf(y.cpu()), torch.isinf(right)) or not torch.allclose(
                y.double().cpu().nan_to_num(0.0, 0.0, 0.0), right.nan_to_num(0.0, 0.0, 0.0), atol=1e-5, rtol=1e-4):
            differ.append(name)
        x = y
    if not differ:
        return None, []
    return torch.softmax(x.double().cpu(), dim=-1), differ


def upstream_note(differ: list[str]) -> str:
    charged = "; ".join(f"{name}, charged by {FILTER_TESTS[name]}" for name in differ)
    return f"note: your {' and '.join(differ)} also differ(s) from the contract here ({charged})"
