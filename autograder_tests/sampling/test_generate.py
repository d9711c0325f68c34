"""Hidden tests of stage `sampling`, part 3: generate.

The model is the grader's fixture ContextLM (assignments/tests/fixtures_sampling.py), built in the
worker for the submission and here for the reference: its logits depend on the whole
window it is given and it raises ValueError past block_size, so a wrong crop shows.
Exact draws are judged by sampling_draws.judge, step by step with the submission's
own earlier tokens as context. Error carried forward: generate is also right when it
makes exactly the tokens the student's OWN sample_next makes step by step (called here
on the model's logits with the student's tokens as context), or, when that sample_next
ignores the generator, when every token is one its filters allow; those mistakes are
charged by the sample_next and filter tests.
"""

from __future__ import annotations

import pytest
import torch

from grader.testing import (CheckFailure, StudentCodeError, build_fixture, expect_close, expect_equal,
                            randint, seeded)
from sampling_draws import (check_cut, copy_of, distribution, divides_by_zero, judge,  # helpers
                            own_distribution, same_state)

# ---- generate -----------------------------------------------------------------

V, BLOCK = 11, 4


def lm_kwargs(seed: int, returns_tuple: bool = False) -> dict:
    return dict(vocab_size=V, block_size=BLOCK, seed=seed, scale=1.5, returns_tuple=returns_tuple)


def models(student, device: str, seed: int, returns_tuple: bool = False):
    """The grader's ContextLM in the worker, the same one here, and a float64 copy on the CPU."""
    kwargs = lm_kwargs(seed, returns_tuple)
    remote = student.fixture("ContextLM", device=device, **kwargs)
    local = build_fixture("ContextLM", [], dict(kwargs, device=device))
    exact = build_fixture("ContextLM", [], dict(kwargs, device="cpu")).double()
    return remote, local, exact


@torch.no_grad()
def last_logits(model, idx: torch.Tensor) -> torch.Tensor:
    out = model(idx)
    return (out[0] if isinstance(out, tuple) else out)[:, -1, :]


def last_block(idx: torch.Tensor) -> torch.Tensor:
    return idx[:, -BLOCK:]


@torch.no_grad()
def generate_variant(reference, model, idx, steps, start, crop=last_block, position=-1, **options):
    """A generate loop with one thing changed, for naming mistakes (an error means "not this one")."""
    gen = copy_of(start)
    for _ in range(steps):
        out = model(crop(idx))
        logits = (out[0] if isinstance(out, tuple) else out)[:, position, :]
        idx = torch.cat([idx, reference.sample_next(logits, generator=gen, **options)], dim=1)
    return idx


def generate_mistakes(reference, model, idx, steps, start, options) -> dict:
    variant = lambda **kw: lambda: generate_variant(reference, model, idx, steps, start,  # noqa: E731
                                                    **(options | kw))
    return {
        "the context is cropped to the FIRST block_size tokens instead of the last (idx[:, -block_size:])":
            variant(crop=lambda i: i[:, :BLOCK]),
        "the context is cropped to block_size - 1 tokens": variant(crop=lambda i: i[:, -(BLOCK - 1):]),
        "the logits of the first position are used instead of the last (logits[:, -1, :])": variant(position=0),
        "temperature / top_k / top_p are not passed on to sample_next":
            variant(temperature=1.0, top_k=None, top_p=None),
        "the argmax is taken instead of sampling": variant(temperature=0.0),
    }


def call_generate(student, what: str, *args, **kwargs):
    """student.sampling.generate(...), naming the mistakes that make the model raise."""
    try:
        return student.sampling.generate(*args, **kwargs)
    except StudentCodeError as exc:
        text = str(exc)
        if "longer than block_size" in text:
            raise CheckFailure(f"{what}: looks like generate does not crop the context: feed the model "
                               f"idx[:, -block_size:], at most block_size tokens\n({text.splitlines()[0]})") from None
        if exc.type_name in ("TypeError", "AttributeError", "IndexError") and "tuple" in text:
            raise CheckFailure(f"{what}: looks like generate does not accept a model that returns a "
                               f"(logits, loss) tuple\n({text.splitlines()[0]})") from None
        if kwargs.get("temperature") == 0 and divides_by_zero(exc):
            raise CheckFailure(f"{what}: looks like temperature 0 divides the logits by zero (or calls "
                               "apply_temperature); temperature 0 means greedy decoding: the argmax\n"
                               f"({text.splitlines()[0]})") from None
        raise


SAMPLE_NEXT_TESTS = "the sample_next tests ('sample_next draws exactly the contract's tokens ...')"


@torch.no_grad()
def own_generate(student, model, idx: torch.Tensor, steps: int, start: torch.Generator, options: dict):
    """The generate loop run here with the student's OWN sample_next (remote) on `model`'s logits:
    (tokens, generator afterwards), or the StudentCodeError that sample_next raised."""
    gen, out = copy_of(start), idx
    for _ in range(steps):
        try:
            token = student.sampling.sample_next(last_logits(model, last_block(out)), generator=gen, **options)
        except StudentCodeError as exc:
            return exc, gen
        if not isinstance(token, torch.Tensor) or tuple(token.shape) != (idx.shape[0], 1) \
                or token.dtype != torch.int64:
            return None, gen
        out = torch.cat([out, token.to(out.device)], dim=1)
    return out, gen


def carried_forward(student, reference, model, exact, got, gen, idx, steps, start, options) -> bool:
    """Whether `got` (with the student's generator `gen` afterwards) is what the student's own
    sample_next makes (see the module docstring)."""
    own, own_gen = own_generate(student, model, idx, steps, start, options)
    if isinstance(own, torch.Tensor) and isinstance(got, torch.Tensor) and torch.equal(own.cpu(), got.cpu()) \
            and same_state(own_gen, gen):
        return True
    if not (same_state(own_gen, start) and same_state(gen, start) and isinstance(got, torch.Tensor)
            and tuple(got.shape) == (idx.shape[0], idx.shape[1] + steps) and torch.equal(got[:, :idx.shape[1]], idx)
            and bool(((got >= 0) & (got < V)).all()) and options.get("temperature", 1.0) != 0):
        return False
    # The student's sample_next never uses the generator (charged there): every token must be
    # one the (student's own, else the contract's) filters allow.
    T, options = idx.shape[1], {"temperature": 1.0} | options
    for step in range(steps):
        logits = last_logits(exact, last_block(got[:, :T + step]).cpu())
        probs = own_distribution(student, reference, logits.float().to(idx.device), **options)[0]
        probs = distribution(reference, logits, **options) if probs is None else probs
        if (probs.gather(-1, got[:, T + step:T + step + 1].cpu()) <= 0).any():
            return False
    return True


GEN_CASES = {
    "T=1": dict(seed=21, prompt=(3, 2), steps=8, options=dict(temperature=1.0)),
    "T=0.8, top_k=4": dict(seed=22, prompt=(3, 3), steps=7, options=dict(temperature=0.8, top_k=4)),
    "T=1.3, top_p=0.8": dict(seed=23, prompt=(2, 1), steps=9, options=dict(temperature=1.3, top_p=0.8)),
    "a prompt longer than block_size": dict(seed=24, prompt=(2, 7), steps=6, options=dict(temperature=1.0)),
    "a (logits, loss) model, T=0.9, top_k=6, top_p=0.9":
        dict(seed=25, prompt=(2, 2), steps=8, options=dict(temperature=0.9, top_k=6, top_p=0.9), tuple=True),
}


@pytest.mark.points(3)
@pytest.mark.parametrize("name", list(GEN_CASES))
def test_generate_exact(student, reference, device, name):
    """generate draws exactly the contract's tokens from a seeded generator: {name}"""
    case = GEN_CASES[name]
    remote, local, exact = models(student, device, case["seed"], case.get("tuple", False))
    idx = randint(case["prompt"], high=V, seed=case["seed"], device=device)
    steps, options = case["steps"], case["options"]
    start = seeded(500 + case["seed"], device)
    gen, end = copy_of(start), copy_of(start)
    expected = reference.generate(local, idx, steps, BLOCK, generator=end, **options)
    T = idx.shape[1]
    for step in range(steps):
        check_cut(reference, last_logits(exact, last_block(expected[:, :T + step]).cpu()), **options)
    what = f"generate(model, idx {tuple(idx.shape)}, {steps}, block_size={BLOCK}, {name}, generator)"
    got = call_generate(student, what, remote, idx, steps, BLOCK, generator=gen, **options)

    def step_probs(step, tokens):
        return distribution(reference, last_logits(exact, last_block(tokens[:, :T + step]).cpu()), **options)

    if isinstance(got, torch.Tensor) and got.shape == expected.shape:
        expect_close(got[:, :T], idx, what=f"the first {T} columns of {what} (the prompt, unchanged)")
    try:
        judge(got, gen, start, expected, end, steps, step_probs, what,
              generate_mistakes(reference, local, idx, steps, start, options))
    except CheckFailure as failure:
        if carried_forward(student, reference, local, exact, got, gen, idx, steps, start, options):
            return   # the tokens of the student's own sample_next: charged by its tests
        raise CheckFailure(f"{failure}\n(if your sample_next is off, that is charged by {SAMPLE_NEXT_TESTS}; "
                           "generate is judged here against your own sample_next too, and differs from it)") \
            from None


@pytest.mark.points(2)
@pytest.mark.parametrize("how", ["omitted", "passed explicitly"])
def test_generate_defaults(student, reference, device, how):
    """generate with temperature, top_k and top_p {how} (1.0, None, None) draws the contract's tokens"""
    remote, local, exact = models(student, device, 26)
    idx, steps = randint((2, 3), high=V, seed=26, device=device), 6
    options = {} if how == "omitted" else {"temperature": 1.0, "top_k": None, "top_p": None}
    start = seeded(526, device)
    gen, end = copy_of(start), copy_of(start)
    expected = reference.generate(local, idx, steps, BLOCK, generator=end)
    text = "" if how == "omitted" else ", temperature=1.0, top_k=None, top_p=None"
    what = f"generate(model, idx (2, 3), {steps}, block_size={BLOCK}{text}, generator)"
    got = call_generate(student, what, remote, idx, steps, BLOCK, generator=gen, **options)

    def step_probs(step, tokens):
        return distribution(reference, last_logits(exact, last_block(tokens[:, :3 + step]).cpu()), 1.0)

    try:
        judge(got, gen, start, expected, end, steps, step_probs, what,
              generate_mistakes(reference, local, idx, steps, start, {}))
    except CheckFailure:
        if carried_forward(student, reference, local, exact, got, gen, idx, steps, start, {}):
            return
        raise


@pytest.mark.points(2)
@pytest.mark.parametrize("returns_tuple", [False, True])
def test_generate_greedy(student, reference, device, returns_tuple):
    """generate with temperature 0 is greedy decoding, past block_size (tuple model: {returns_tuple})"""
    remote, local, _ = models(student, device, 31, returns_tuple)
    idx = randint((3, 3), high=V, seed=31, device=device)
    expected = reference.generate(local, idx, 7, BLOCK, temperature=0.0)
    what = f"generate(model, idx (3, 3), 7, block_size={BLOCK}, temperature=0)"
    got = None
    try:
        got = call_generate(student, what, remote, idx, 7, BLOCK, temperature=0.0, generator=seeded(0, device))
        expect_equal(got, expected, what=what, mistakes={
            d: m for d, m in generate_mistakes(reference, local, idx, 7, seeded(0, device),
                                               dict(temperature=0.0)).items() if "argmax" not in d})
    except (CheckFailure, StudentCodeError):
        # Error carried forward: the student's own sample_next at temperature 0, step by step.
        own, _ = own_generate(student, local, idx, 7, seeded(0, device), dict(temperature=0.0))
        if got is None and isinstance(own, StudentCodeError) and not own.is_a("NotImplementedError"):
            return   # generate fails as the student's own greedy sample_next fails: charged by test_greedy
        if isinstance(own, torch.Tensor) and isinstance(got, torch.Tensor) and torch.equal(own.cpu(), got.cpu()):
            return   # the tokens of the student's own greedy sample_next
        raise


@pytest.mark.points(2)
def test_generate_shape_and_prompt(student, device):
    """generate returns (B, T + max_new_tokens) int64 on the device, prompt first, without gradients"""
    remote, _, _ = models(student, device, 41)
    idx = randint((3, 2), high=V, seed=41, device=device)
    what = f"generate(model, idx (3, 2), 5, block_size={BLOCK}) with generator=None"
    got = call_generate(student, what, remote, idx, 5, BLOCK)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (3, 7):
        expect_close(got, torch.zeros(3, 7, dtype=torch.int64, device=device), what=what)
    expect_close(got[:, :2], idx, what=f"the first 2 columns of {what} (the prompt, unchanged)")
    expect_close(got, got.clamp(0, V - 1), what=f"{what}: every token is a vocabulary id in [0, {V})")
    if got.requires_grad or remote.grad_calls:
        raise CheckFailure(f"{what}: the model was called with gradient tracking on; generate runs "
                           "under @torch.no_grad() (no graph is needed to sample, and it costs memory)")
    same = call_generate(student, "generate(model, idx, 0, block_size)", remote, idx, 0, BLOCK)
    expect_equal(same, idx, what=f"generate(model, idx (3, 2), 0, block_size={BLOCK}) (no new tokens)")
