"""Helpers of the embeddings suite (importable by name while grading): inputs, modules,
rankings, the cosine tolerance and the error carried forward into nearest and analogy."""

import math

import torch

from grader.testing import (CheckFailure, StudentCodeError, assert_outside, backward, expect_close,
                            reduction_atol, tensor_mismatch)

COSINE_TEST = "'cosine_similarity over the last dim with broadcasting, ...'"
NEAREST_TEST = "'nearest on a table where cosine and dot product disagree, ...'"
WEIGHT_TEST = "'TokenEmbedding.weight is a float32 parameter of shape (rows, d_model) named 'weight''"


def int64(values, device: str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64, device=device)


def student_module(student, cls: str, rows: int, d_model: int, weight: torch.Tensor, device: str,
                   double: bool = False):
    """The student's `cls`(rows, d_model) holding `weight`, moved to `device` (after .double()
    when `double`, before loading a float64 `weight`)."""
    module = getattr(student.embeddings, cls)(rows, d_model)
    if double:
        module.double()
    try:
        module.load_state_dict({"weight": weight})
    except StudentCodeError as exc:
        if "Unexpected key" not in str(exc) and "Missing key" not in str(exc):
            raise
        raise CheckFailure(f"{cls}({rows}, {d_model}) has no parameter named 'weight' to load this test's table "
                           f"into (its state_dict() has no 'weight'): store the table as self.weight = "
                           f"nn.Parameter(...); that is charged by {WEIGHT_TEST}\n"
                           f"({str(exc).splitlines()[0]})") from None
    module.to(device)
    return module


def weight_grad(module, arg, grad_output: torch.Tensor, cls: str):
    """The gradient of `module`'s weight after backpropagating grad_output through module(arg)."""
    cut = (f"{cls}: no gradient reached weight: index the parameter itself "
           "(no .data, .detach() or torch.tensor(...) copies)")
    try:
        grads = backward(module, arg, grad_output=grad_output).param_grads
    except StudentCodeError as exc:
        if "does not require grad" in str(exc):
            raise CheckFailure(f"{cut}\n({str(exc).splitlines()[0]})") from None
        raise
    if grads.get("weight") is None:
        raise CheckFailure(cut)
    return grads["weight"]


def rows_used(out, weight: torch.Tensor) -> list[int] | None:
    """Which row of `weight` each row of the 2-D output `out` is (exactly), or None."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != weight.shape[1]:
        return None
    w, o = weight.detach().cpu().double(), out.detach().cpu().double()
    found = []
    for row in o:
        match = (w == row).all(dim=1).nonzero().flatten()
        if match.numel() != 1:
            return None
        found.append(int(match[0]))
    return found


# ---- cosine tolerance ------------------------------------------------------------------

def cosine_atol(d: int, dtype: torch.dtype = torch.float32) -> float:
    """The derived bound of a cosine of d-vectors in `dtype`, any summation order.

    a·b is within γ_{d+4}·Σ|a_i b_i| ≤ γ_{d+4}·||a||·||b|| (Cauchy-Schwarz): γ_{d+4} after the
    division; each squared norm carries γ_{d+4} relative, so ||a||·||b|| about the same, which
    moves |cos| ≤ 1 by at most that: 2·γ_{d+4} in all. float32: d = 8 gives 1.4e-6 (under the
    1e-5 elementwise atol), d = 16 2.4e-6, d = 768 9.2e-5.
    """
    return 2 * reduction_atol(d, 1.0, dtype=dtype)


def cosine_mistakes(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> dict:
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum(-1) / (a64.norm(dim=-1) * b64.norm(dim=-1))
    # Norms clamped to eps over dim 0, as the contract clamps them over the last dim: the same on
    # nonzero vectors, and a zero vector then gives 0 rather than NaN, as that mistake's code does.
    norm0 = lambda t: t.norm(dim=0).clamp_min(1e-8)  # noqa: E731
    return {
        "the similarity is taken over dim 0; it must be over the LAST dim":
            lambda: ((a64 * b64).sum(0) / (norm0(a64) * norm0(b64))).to(dtype),
        "the vectors are not normalised (that is the dot product)": lambda: (a64 * b64).sum(-1).to(dtype),
        "the result is 1 - cosine (the cosine distance)": lambda: (1 - cos).to(dtype),
        "the norms are squared (divide by ||a|| * ||b||, not ||a||^2 * ||b||^2)":
            lambda: ((a64 * b64).sum(-1) / (a64.norm(dim=-1) ** 2 * b64.norm(dim=-1) ** 2)).to(dtype),
    }


# ---- rankings and the error carried forward ----------------------------------------------

def near_tie(scores: torch.Tensor, k: int, exclude=(), margin: float = 1e-4) -> bool:
    """Whether two of the k + 1 best scores (after exclude) lie within `margin`."""
    scores = scores.double().cpu().clone()
    scores[list(exclude)] = -math.inf
    top = scores.sort(descending=True).values[: k + 1]
    top = top[torch.isfinite(top)]
    return top.numel() >= 2 and bool((top[:-1] - top[1:]).abs().min() <= margin)


def ranking(scores: torch.Tensor, k: int, exclude=(), descending: bool = True) -> torch.Tensor:
    """Indices of the k best scores (float64), after checking no near tie decides the order.

    The margin 1e-4 is far above the float32 drift of a cosine (cosine_atol: 2.4e-6 for d = 16,
    twice that between two scores), so no correct formulation can swap two ranked rows."""
    assert not near_tie(scores if descending else -scores, k, exclude), "grader: near tie in a ranking"
    scores = scores.double().cpu().clone()
    scores[list(exclude)] = -math.inf if descending else math.inf
    return scores.argsort(descending=descending)[:k]


def own_scores(student, query: torch.Tensor, table: torch.Tensor) -> torch.Tensor | None:
    """The student's cosine_similarity(query, table) as data: (V,) scores, or None if unusable."""
    try:
        scores = student.embeddings.cosine_similarity(query, table)
    except StudentCodeError:
        return None
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (table.shape[0],) \
            or not scores.is_floating_point() or torch.isnan(scores).any():
        return None
    return scores.detach().double().cpu()


def cosine_note(student, query: torch.Tensor, table: torch.Tensor) -> str:
    """A note naming the student's own cosine mistake on (query, table), or "" when it is right."""
    expected = (table.double() @ query.double() / (table.double().norm(dim=1) * query.double().norm()))
    try:
        got = student.embeddings.cosine_similarity(query, table)
        expect_close(got, expected.to(table.dtype), atol=1e-4, rtol=1e-4, check_device=False,
                     what="cosine_similarity(query, table)", mistakes=cosine_mistakes(query, table, table.dtype))
    except CheckFailure as failure:
        return f"note: your {str(failure).splitlines()[0]}; that is charged by {COSINE_TEST}"
    except StudentCodeError as exc:
        return (f"note: your cosine_similarity(query, table) fails ({str(exc).splitlines()[0]}); that is "
                f"charged by {COSINE_TEST}")
    return ""


def matches_own_cosine(student, got, query, table, k: int, exclude=()) -> bool:
    """Error carried forward: nearest returned the k best rows by the student's OWN cosine
    (read back from their cosine_similarity; only when those scores have no near tie)."""
    scores = own_scores(student, query, table)
    if scores is None or not isinstance(got, torch.Tensor) or near_tie(scores, k, exclude):
        return False
    expected = ranking(scores, k, exclude).to(table.device)
    return tensor_mismatch(got, expected, atol=0, rtol=0) is None


def own_nearest(student, target: torch.Tensor, table: torch.Tensor, k: int, exclude: list[int]):
    """The student's nearest(target, table, k, exclude) as data, or None."""
    try:
        value = student.embeddings.nearest(target, table, k, exclude)
    except StudentCodeError:
        return None
    return value if isinstance(value, torch.Tensor) else None
