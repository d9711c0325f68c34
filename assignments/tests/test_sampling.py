"""Public tests of stage `sampling`: run them with `llmgrade check sampling`.

Every expected value below is the handout's running example (07-sampling.md,
logits z = [2.0, 1.0, 0.5, 0.0, -1.0]), small enough to check by hand. The
hidden tests check much more (batches, ties, exact draws from a seeded
generator, a chi-square test of the distribution, generate with a real model).
"""

import math

import pytest
import torch

from grader.testing import CheckFailure, expect_close, expect_raises, expect_tensor

pytestmark = pytest.mark.stage("sampling")

Z = [2.0, 1.0, 0.5, 0.0, -1.0]
INF = -math.inf

# apply_temperature(z, T) and its softmax (handout section 2).
SCALED = {0.5: [4.0, 2.0, 1.0, 0.0, -2.0], 1.0: Z, 2.0: [1.0, 0.5, 0.25, 0.0, -0.5]}
SOFTMAX = {0.5: [0.8292, 0.1122, 0.0413, 0.0152, 0.0021],
           1.0: [0.5630, 0.2071, 0.1256, 0.0762, 0.0280],
           2.0: [0.3745, 0.2272, 0.1769, 0.1378, 0.0836]}


def z(device: str, values=Z) -> torch.Tensor:
    return torch.tensor(values, device=device)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_hand(student, device, temperature):
    """apply_temperature of the handout's logits at T = {temperature}"""
    scaled = student.sampling.apply_temperature(z(device), temperature)
    expect_close(scaled, z(device, SCALED[temperature]), what=f"apply_temperature(z, {temperature})",
                 mistakes={"the logits are multiplied by the temperature instead of divided":
                           z(device) * temperature})
    expect_close(torch.softmax(scaled, dim=-1), z(device, SOFTMAX[temperature]), atol=1e-4, rtol=0,
                 what=f"softmax(apply_temperature(z, {temperature}))")


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_temperature_rejects(student, temperature):
    """apply_temperature raises ValueError for T = {temperature}"""
    with expect_raises("ValueError", what=f"apply_temperature(z, {temperature})"):
        student.sampling.apply_temperature(z("cpu"), temperature)


def test_top_k_hand(student, device):
    """top_k_filter keeps the 2 largest logits, and all ties with the 2nd largest"""
    expect_close(student.sampling.top_k_filter(z(device), 2), z(device, [2.0, 1.0, INF, INF, INF]),
                 what="top_k_filter(z, 2)", mistakes={
                     "the k SMALLEST logits are kept": z(device, [INF, INF, INF, 0.0, -1.0])})
    tied = [2.0, 1.0, 1.0, 0.0, -1.0]
    expect_close(student.sampling.top_k_filter(z(device, tied), 2), z(device, [2.0, 1.0, 1.0, INF, INF]),
                 what="top_k_filter([2, 1, 1, 0, -1], 2)", mistakes={
                     "a token tied with the k-th largest logit is dropped (ties must be kept)":
                         z(device, [2.0, 1.0, INF, INF, INF])})
    expect_close(student.sampling.top_k_filter(z(device), 5), z(device), what="top_k_filter(z, 5) (k == V)")


@pytest.mark.parametrize("p, kept", [(0.8, 3), (0.5, 1), (0.05, 1), (0.99, 5)])
def test_top_p_hand(student, device, p, kept):
    """top_p_filter of the handout's logits with p = {p} keeps {kept} token(s)"""
    expected = z(device, Z[:kept] + [INF] * (5 - kept))
    without_crossing = z(device, Z[:kept - 1] + [INF] * (6 - kept))
    expect_close(student.sampling.top_p_filter(z(device), p), expected, what=f"top_p_filter(z, {p})",
                 mistakes={"the token whose probability crosses p is dropped (it must be kept)":
                           without_crossing})


def test_top_p_one_and_rejects(student, device):
    """top_p_filter with p = 1 changes nothing; p = 0 and p = 1.5 raise ValueError"""
    expect_close(student.sampling.top_p_filter(z(device), 1.0), z(device), what="top_p_filter(z, 1.0)")
    for p in (0.0, 1.5):
        with expect_raises("ValueError", what=f"top_p_filter(z, {p})"):
            student.sampling.top_p_filter(z(device), p)


def test_greedy(student, device):
    """sample_next with temperature 0 returns the argmax as a (B, 1) int64 tensor"""
    logits = z(device, [Z, [0.0, 3.0, 1.0, 2.0, -1.0]])
    expect_close(student.sampling.sample_next(logits, temperature=0.0),
                 torch.tensor([[0], [1]], device=device), what="sample_next(logits, temperature=0)")


def test_sampling_respects_filters(student, device):
    """sample_next(T=0.5, top_p=0.9) draws only tokens 0 and 1, and both of them"""
    # Handout section 6: temperature first keeps tokens {0, 1} with probabilities 0.8808, 0.1192.
    logits = z(device).repeat(2000, 1)
    gen = torch.Generator(device=device).manual_seed(0)
    tokens = student.sampling.sample_next(logits, temperature=0.5, top_p=0.9, generator=gen)
    expect_tensor(tokens, what="sample_next on (2000, 5) logits", shape=(2000, 1), dtype=torch.int64)
    counts = torch.bincount(tokens.flatten().cpu(), minlength=5).tolist()
    if counts[2] + counts[3] + counts[4]:
        raise CheckFailure(f"sample_next(T=0.5, top_p=0.9) drew tokens 2, 3 or 4 (counts {counts}); only "
                           "tokens 0 and 1 survive when the temperature is applied BEFORE top-p")
    if not 1600 <= counts[0] <= 1920:
        raise CheckFailure(f"sample_next(T=0.5, top_p=0.9) drew token 0 {counts[0]} times out of 2000; "
                           "expected about 0.8808 x 2000 = 1762")


def test_generate_shape(student, device):
    """generate returns (B, T + max_new_tokens) int64 with the prompt unchanged"""
    model = student.fixture("ContextLM", vocab_size=7, block_size=4, seed=0, device=device)
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]], device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    out = student.sampling.generate(model, idx, 6, block_size=4, generator=gen)
    expect_tensor(out, what="generate(model, idx (2, 3), 6, block_size=4)", shape=(2, 9), dtype=torch.int64)
    expect_close(out[:, :3], idx, what="the first 3 columns of generate(...) (the prompt)")
