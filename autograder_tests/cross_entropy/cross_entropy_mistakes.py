"""The loss as the contract defines it, and the known mistakes as variants of it (float64).

`oracle` is F.cross_entropy in float64 in the grading process (it is banned only in the
student's worker); `by_hand` is the same loss with the knobs the known mistakes turn, and
`mistakes_for` says which of them the given inputs can show. Shared by the loss tests,
with the wording of their feedback (`describe_call`, `expect_not_a_number`, `wrong_shape`).
"""

import torch
import torch.nn.functional as F

from grader.testing import CheckFailure, StudentCodeError


def make(shape, seed: int, ignored: int = 0, ignore_index: int = -100, scale: float = 2.0):
    """float64 CPU logits `shape` and int64 targets `shape[:-1]`, `ignored` of them set to ignore_index."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    targets = torch.randint(shape[-1], shape[:-1], generator=g)
    if ignore_index >= 0:   # ignore_index is a real class: keep it out of the counted targets
        targets = torch.where(targets == ignore_index, (targets + 1) % shape[-1], targets)
    flat = targets.view(-1)
    flat[torch.randperm(flat.numel(), generator=g)[:ignored]] = ignore_index
    return logits, targets


def oracle(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """F.cross_entropy in float64 on the CPU, class dimension last (differentiable in logits)."""
    C = logits.shape[-1]
    out = F.cross_entropy(logits.cpu().double().reshape(-1, C), targets.cpu().reshape(-1),
                          ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    return out.reshape(targets.shape) if reduction == "none" else out


def by_hand(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0, *,
            dim=-1, smoothing="pytorch", denominator=None, flat=False, sign=1.0,
            mask_smoothing=True):
    """The loss in float64, with the knobs the known mistakes turn (defaults: correct)."""
    x = logits.cpu().double()
    targets = targets.cpu()
    C, eps = x.shape[-1], label_smoothing
    logp = x - torch.logsumexp(x, dim=dim, keepdim=True)
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    nll = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    others = -logp.masked_fill(F.one_hot(safe, C).bool(), 0.0).sum(-1)
    mixed = {"pytorch": (1 - eps) * nll + eps * -logp.mean(-1),
             "ignored": nll,
             "others_c_minus_1": (1 - eps) * nll + eps / (C - 1) * others,
             "others_over_c": (1 - eps) * nll + eps / C * others,
             "sum_over_classes": (1 - eps) * nll + eps * -logp.sum(-1),
             "no_one_minus": nll + eps * -logp.mean(-1)}[smoothing]
    losses = torch.where(keep, mixed, torch.zeros_like(mixed))
    if not mask_smoothing:
        losses = torch.where(keep, (1 - eps) * nll, torch.zeros_like(nll)) + eps * -logp.mean(-1)
    losses = sign * losses
    if reduction == "none":
        return losses.reshape(-1) if flat else losses
    denominator = denominator or ("targets" if reduction == "mean" else "one")
    count = {"targets": keep.sum(), "all": keep.numel(), "batch": targets.shape[0],
             "classes": keep.sum() * C, "one": 1}[denominator]
    return losses.sum() / count


def mistakes_for(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0) -> dict:
    """description -> the knobs of `by_hand` that reproduce it, for the mistakes these inputs can show."""
    found = {"the loss is not negated (cross-entropy is -log p of the target)": {"sign": -1.0},
             "the log-softmax is taken over the wrong dimension: the class dimension is the LAST one":
                 {"dim": 1 if logits.dim() == 3 else 0}}
    ignored = bool((targets == ignore_index).any())
    if ignored and ignore_index != -100:
        found["the ignore_index argument is not used (only -100 is ignored)"] = {"ignore_index": -100}
    if reduction == "mean":
        found |= {"the loss is summed instead of averaged (reduction='mean')": {"denominator": "one"},
                  "the loss is also divided by the number of classes C": {"denominator": "classes"}}
        if ignored:
            found["the mean is taken over all positions, ignored ones included (divide by the "
                  "number of non-ignored targets)"] = {"denominator": "all"}
        if logits.dim() == 3:
            found["the mean divides by the batch size B instead of the number of targets"] = \
                {"denominator": "batch"}
    if reduction == "sum":
        found["reduction='sum' averages instead of summing"] = {"denominator": "targets"}
    if reduction == "none" and logits.dim() == 3:
        found["reduction='none' returns a flat (B*T,) tensor; it must have the shape of targets, "
              "(B, T)"] = {"flat": True}
    if label_smoothing:
        found |= {
            "label_smoothing is ignored": {"smoothing": "ignored"},
            "label smoothing gives eps/(C-1) to each other class; PyTorch mixes in eps/C for "
            "EVERY class, the target included: (1-eps)*nll + eps*mean over classes of -log p":
                {"smoothing": "others_c_minus_1"},
            "the smoothing term leaves out the target class (eps * the MEAN over all C classes "
            "of -log p, the target included)": {"smoothing": "others_over_c"},
            "the smoothing term sums -log p over the classes instead of averaging (divide by C)":
                {"smoothing": "sum_over_classes"},
            "the nll term is not multiplied by (1 - label_smoothing)": {"smoothing": "no_one_minus"}}
        if ignored:
            found["the smoothing term is not zeroed for ignored targets"] = {"mask_smoothing": False}
    return found


def like(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return value.detach().to(dtype=x.dtype, device=x.device)


# ---- what the tests say about a loss --------------------------------------------

def describe_call(x, targets, kwargs) -> str:
    args = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    return (f"cross_entropy(logits {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}, "
            f"targets {tuple(targets.shape)}{args})")


def expect_not_a_number(got, what: str) -> None:
    """A loss returned as a Python number (.item(), float()) cannot carry gradients: say so."""
    if isinstance(got, (int, float)):
        raise CheckFailure(f"{what}: looks like the loss is returned as a Python number (.item() or "
                           f"float()); return a tensor so that gradients can flow back")


def loss_mistakes(x, targets, options: dict, indistinguishable=()) -> dict:
    """description -> what that known mistake gives for (x, targets, **options), in x's dtype
    and device (computed on demand); `indistinguishable`: smoothing knobs left out."""
    return {d: (lambda knobs=knobs: like(by_hand(x, targets, **(options | knobs)), x))
            for d, knobs in mistakes_for(x, targets, **options).items()
            if not any(knobs.get("smoothing") == k for k in indistinguishable)}


def wrong_shape(student, x, targets, kwargs) -> str:
    """The words "looks like <mistake>; " when the student's loss (read back from their
    forward) has the shape a known mistake gives, else an empty string."""
    try:
        got = student.cross_entropy.cross_entropy(x, targets, **kwargs)
    except StudentCodeError:
        return ""
    options = {k: kwargs[k] for k in ("ignore_index", "reduction", "label_smoothing") if k in kwargs}
    for description, knobs in mistakes_for(x, targets, **options).items():
        if isinstance(got, torch.Tensor) and "flat" in knobs and tuple(got.shape) == (targets.numel(),):
            return f"looks like {description}; "
    return ""
