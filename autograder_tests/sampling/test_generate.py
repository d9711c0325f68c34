"""Hidden tests of stage `sampling`, part 3: generate.

The model is the grader's fixture ContextLM (grader/worker/fixtures.py), built in the
worker for the submission and here for the reference: its logits depend on the whole
window it is given and it raises ValueError past block_size, so a wrong crop shows.
Exact draws are judged by sampling_draws.judge, step by step with the submission's
own earlier tokens as context.
"""

from __future__ import annotations

import pytest
import torch

from grader.checks import CheckFailure, expect_close, expect_equal
from grader.remote import StudentCodeError
from grader.worker import fixtures
from sampling_draws import check_cut, copy_of, distribution, divides_by_zero, judge, seeded

# ---- generate -----------------------------------------------------------------

V, BLOCK = 11, 4


def lm_kwargs(seed: int, returns_tuple: bool = False) -> dict:
    return dict(vocab_size=V, block_size=BLOCK, seed=seed, scale=1.5, returns_tuple=returns_tuple)


def models(student, device: str, seed: int, returns_tuple: bool = False):
    """The grader's ContextLM in the worker, the same one here, and a float64 copy on the CPU."""
    kwargs = lm_kwargs(seed, returns_tuple)
    remote = student.fixture("ContextLM", device=device, **kwargs)
    local = fixtures.build("ContextLM", [], dict(kwargs, device=device))
    exact = fixtures.build("ContextLM", [], dict(kwargs, device="cpu")).double()
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


GEN_CASES = {
    "T=1": dict(seed=21, prompt=(3, 2), steps=8, options=dict(temperature=1.0)),
    "T=0.8, top_k=4": dict(seed=22, prompt=(3, 3), steps=7, options=dict(temperature=0.8, top_k=4)),
    "T=1.3, top_p=0.8": dict(seed=23, prompt=(2, 1), steps=9, options=dict(temperature=1.3, top_p=0.8)),
    "a prompt longer than block_size": dict(seed=24, prompt=(2, 7), steps=6, options=dict(temperature=1.0)),
    "a (logits, loss) model, T=0.9, top_k=6, top_p=0.9":
        dict(seed=25, prompt=(2, 2), steps=8, options=dict(temperature=0.9, top_k=6, top_p=0.9), tuple=True),
}


def prompt(shape, seed: int, device: str) -> torch.Tensor:
    return torch.randint(V, shape, generator=torch.Generator().manual_seed(seed)).to(device)


@pytest.mark.points(3)
@pytest.mark.parametrize("name", list(GEN_CASES))
def test_generate_exact(student, reference, device, name):
    """generate draws exactly the contract's tokens from a seeded generator: {name}"""
    case = GEN_CASES[name]
    remote, local, exact = models(student, device, case["seed"], case.get("tuple", False))
    idx, steps, options = prompt(case["prompt"], case["seed"], device), case["steps"], case["options"]
    start = seeded(device, 500 + case["seed"])
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
    judge(got, gen, start, expected, end, steps, step_probs, what,
          generate_mistakes(reference, local, idx, steps, start, options))


@pytest.mark.points(2)
@pytest.mark.parametrize("returns_tuple", [False, True])
def test_generate_greedy(student, reference, device, returns_tuple):
    """generate with temperature 0 is greedy decoding, past block_size (tuple model: {returns_tuple})"""
    remote, local, _ = models(student, device, 31, returns_tuple)
    idx = prompt((3, 3), 31, device)
    expected = reference.generate(local, idx, 7, BLOCK, temperature=0.0)
    what = f"generate(model, idx (3, 3), 7, block_size={BLOCK}, temperature=0)"
    got = call_generate(student, what, remote, idx, 7, BLOCK, temperature=0.0, generator=seeded(device, 0))
    expect_equal(got, expected, what=what, mistakes={
        d: m for d, m in generate_mistakes(reference, local, idx, 7, seeded(device, 0),
                                           dict(temperature=0.0)).items() if "argmax" not in d})


@pytest.mark.points(2)
def test_generate_shape_and_prompt(student, device):
    """generate returns (B, T + max_new_tokens) int64 on the device, prompt first, without gradients"""
    remote, _, _ = models(student, device, 41)
    idx = prompt((3, 2), 41, device)
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
