"""Error carried forward for the loop tests: the student's own upstream parts, read back as data.

`train` uses lr_at, get_batch and configure_optimizer (and, when it resumes,
save_checkpoint / load_checkpoint). Each of those has its own tests, which charge its
mistakes. A loop test therefore builds its expectation from what the student's parts
give, read back in the worker:

- lr_at: its value for every step the run takes (len(lrs) == max_steps);
- get_batch: the micro-batches of every step, drawn exactly as train must draw them
  (a generator seeded config.seed + s, grad_accum_steps calls);
- configure_optimizer: its param groups (the parameters matched to names by value,
  weight decay, betas, eps) on a fresh copy of the model the run trains;
- checkpoints (resume test only): whether a save/load round trip restores AdamW's
  state and the step.

The reference loop (`training_checks.variant_train`) then runs with those values.
Gradient clipping, accumulation and the seeding of the generators live in `train`
itself: nothing upstream to read back, they stay the loop tests' to charge.

A train that does not call its own (differing) part but the contract's formula is
right too: `expect_either` accepts the expectation from the reference's parts then.
When a loop test still fails, its feedback lists the differing parts and the test
that charges each (`Parts.notes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from grader.testing import CheckFailure, StudentCodeError, backward, build_fixture

LR_TEST = "lr_at: warm-up, peak, cosine decay, and min_lr after max_steps"
BATCH_TEST = "get_batch(data = 100..129, batch_size=4, block_size=5): x, y (4, 5) int64"
GROUPS_TEST = "configure_optimizer: dim >= 2 parameters decayed, biases and norm weights not"
CHECKPOINT_TEST = "save_checkpoint / load_checkpoint restore the model, AdamW's state and the step"
UNMATCHED = "<a tensor that is not one of the model's parameters>"


@dataclass
class Parts:
    """The upstream values a reference loop uses; None (or True) means the reference's own."""
    lrs: list[float] | None = None                       # lr of step s, s < max_steps
    batches: list[list[tuple[torch.Tensor, torch.Tensor]]] | None = None   # [step][micro] (x, y) int64
    groups: list[dict] | None = None                     # {"names", "weight_decay", "betas", "eps"}
    resume_optimizer: bool = True                        # a round trip restores AdamW's state
    resume_step: bool = True                             # ... and load_checkpoint returns the step
    notes: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return (self.lrs is not None or self.batches is not None or self.groups is not None
                or not self.resume_optimizer or not self.resume_step)

    def annotate(self, failure: CheckFailure | StudentCodeError) -> CheckFailure:
        """The failure's feedback, plus one line per upstream part that differs."""
        if not self.notes:
            return failure if isinstance(failure, CheckFailure) else CheckFailure(str(failure))
        lines = "\n".join(f"- {note}" for note in self.notes)
        return CheckFailure(f"{failure}\nParts of yours this run uses that differ from the contract "
                            f"(charged by their own tests, not here):\n{lines}")


REFERENCE = Parts()


def expect_either(check, parts: Parts) -> None:
    """Run check(parts), which raises CheckFailure; pass also when the student's parts differ
    and check(REFERENCE) passes (a train that does not use its own differing part)."""
    try:
        check(parts)
    except CheckFailure as failure:
        if parts.differs:
            try:
                check(REFERENCE)
                return
            except CheckFailure:
                pass
        raise parts.annotate(failure) from None


# ---- reading the parts back --------------------------------------------------------

def read_parts(student, reference, device: str, config: dict, train_data: torch.Tensor, *,
               model_kwargs: dict, batches: bool = True, groups: bool = True,
               checkpoint: bool = False) -> Parts:
    """The student's lr_at, get_batch, configure_optimizer (and checkpoint round trip) for the
    run `config` (EXACT_CONFIG plus changes) on a TinyGPT built from `model_kwargs`."""
    parts = Parts()
    read_lrs(student, reference, config, parts)
    if batches:
        read_batches(student, reference, device, config, train_data, parts)
    if groups:
        read_groups(student, reference, device, config, model_kwargs, parts)
    if checkpoint:
        read_checkpoint(student, device, config, model_kwargs, parts)
    return parts


def read_lrs(student, reference, c: dict, parts: Parts) -> None:
    args = (c["max_lr"], c["min_lr"], c["warmup_steps"], c["max_steps"])
    want = [reference.lr_at(s, *args) for s in range(c["max_steps"])]
    try:
        got = [student.training.lr_at(s, *args) for s in range(c["max_steps"])]
    except StudentCodeError as exc:
        parts.notes.append(f"your lr_at raised an error ({str(exc).splitlines()[0]}), charged by "
                           f"'{LR_TEST}'; this test expected the contract's rates instead")
        return
    values = [_number(v) for v in got]
    if any(v is None or not math.isfinite(v) for v in values):
        parts.notes.append(f"your lr_at returns {got[0]!r:.60} for step 0 (not a finite number), charged "
                           f"by '{LR_TEST}'; this test expected the contract's rates instead")
        return
    bad = [s for s in range(len(want)) if not math.isclose(values[s], want[s], rel_tol=1e-6, abs_tol=1e-12)]
    if bad:
        s = bad[0]
        parts.lrs = values
        parts.notes.append(f"your lr_at gives other rates than the contract's (step {s}: {values[s]:.6g}, "
                           f"expected {want[s]:.6g}), charged by '{LR_TEST}'; this test already "
                           "expects train to use your lr_at's rates")


def read_batches(student, reference, device: str, c: dict, train_data: torch.Tensor, parts: Parts) -> None:
    got, want = [], []
    try:
        for s in range(c["max_steps"]):
            mine, theirs = torch.Generator().manual_seed(c["seed"] + s), torch.Generator().manual_seed(c["seed"] + s)
            got.append([_pair(student.training.get_batch(train_data, c["batch_size"], c["block_size"],
                                                         mine, device)) for _ in range(c["grad_accum_steps"])])
            want.append([reference.get_batch(train_data, c["batch_size"], c["block_size"], theirs, device)
                         for _ in range(c["grad_accum_steps"])])
    except (StudentCodeError, ValueError) as exc:
        parts.notes.append(f"your get_batch fails on the training data ({str(exc).splitlines()[0]}), "
                           f"charged by '{BATCH_TEST}'; this test expected the contract's batches instead")
        return
    same = all(a.shape == b.shape and torch.equal(a.cpu().long(), b.cpu())
               for step_got, step_want in zip(got, want)
               for pair_got, pair_want in zip(step_got, step_want)
               for a, b in zip(pair_got, pair_want))
    if not same:
        parts.batches = [[(x.long(), y.long()) for x, y in step] for step in got]
        parts.notes.append(f"your get_batch draws other batches than the contract's, charged by "
                           f"'{BATCH_TEST}'; this test already expects train to use your get_batch's batches")


def _pair(result) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(result, (tuple, list)) and len(result) == 2
            and all(isinstance(t, torch.Tensor) and not t.is_floating_point() for t in result)):
        raise ValueError(f"it returns {type(result).__name__}, not a pair of integer tensors")
    return result[0], result[1]


def group_names(groups, model) -> list[list[str]]:
    """Name each tensor of each param group by matching it to `model`'s parameters by value."""
    named = [(n, p.detach().cpu()) for n, p in model.named_parameters()]
    out = []
    for group in groups:
        names = []
        for t in group["params"]:
            t = t.cpu()
            match = [n for n, p in named if p.shape == t.shape and torch.equal(p, t)]
            names.append(match[0] if match else UNMATCHED)
        out.append(names)
    return out


def read_groups(student, reference, device: str, c: dict, model_kwargs: dict, parts: Parts) -> None:
    local = build_fixture("TinyGPT", [], dict(model_kwargs, device=device))
    try:
        remote = student.fixture("TinyGPT", device=device, **model_kwargs)
        optimizer = student.training.configure_optimizer(remote, c["max_lr"], c["weight_decay"])
        type_name, raw = optimizer.type_name, optimizer.param_groups
    except StudentCodeError as exc:
        parts.notes.append(f"your configure_optimizer fails ({str(exc).splitlines()[0]}), charged by "
                           f"'{GROUPS_TEST}'; this test expected the contract's groups instead")
        return
    names = group_names(raw, local)
    if type_name not in ("AdamW", "Adam") or any(UNMATCHED in g for g in names):
        parts.notes.append(f"your configure_optimizer does not return an AdamW over the model's parameters "
                           f"(got {type_name}), charged by '{GROUPS_TEST}'; this test expected the "
                           "contract's groups instead")
        return
    got = [{"names": n, "type": type_name, "weight_decay": float(g.get("weight_decay", 0.0)),
            "betas": tuple(g.get("betas", (0.9, 0.95))), "eps": float(g.get("eps", 1e-8))}
           for n, g in zip(names, raw)]
    ref = reference.configure_optimizer(local, c["max_lr"], c["weight_decay"]).param_groups
    want = [{"names": n, "type": "AdamW", "weight_decay": float(g["weight_decay"]), "betas": tuple(g["betas"]),
             "eps": float(g["eps"])} for n, g in zip(group_names(ref, local), ref)]
    if got != want:
        parts.groups = got
        parts.notes.append(f"your configure_optimizer's optimizer or groups differ from the contract's, charged "
                           f"by '{GROUPS_TEST}'; this test already expects train to use your optimizer")


def build_optimizer(model, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """The read-back optimizer (AdamW or Adam) over `model` with its `groups` (a parameter listed
    twice stays twice, as in the student's)."""
    import warnings
    params = dict(model.named_parameters())
    spec = [{"params": [params[n] for n in g["names"]], "weight_decay": g["weight_decay"],
             "betas": g["betas"], "eps": g["eps"]} for g in groups]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "duplicate parameters": what the student's does too
        return getattr(torch.optim, groups[0]["type"] if groups else "AdamW")(spec, lr=lr)


def read_checkpoint(student, device: str, c: dict, model_kwargs: dict, parts: Parts) -> None:
    """Does the student's save/load round trip restore AdamW's state and return the step?"""
    from training_checks import split
    try:
        model = student.fixture("TinyGPT", device=device, **model_kwargs)
        optimizer = student.training.configure_optimizer(model, c["max_lr"], c["weight_decay"])
        x = split("train")[:32].view(2, 16).to(device)
        backward(model, x, split("train")[1:33].view(2, 16).to(device), output_index=1)
        optimizer.step()
        path = f"upstream-probe-{device}.ckpt"
        student.training.save_checkpoint(path, model, optimizer, 3)
        fresh = student.fixture("TinyGPT", device=device, **model_kwargs)
        fresh_optimizer = student.training.configure_optimizer(fresh, c["max_lr"], c["weight_decay"])
        step = student.training.load_checkpoint(path, fresh, fresh_optimizer)
        restored = bool(fresh_optimizer.state_dict()["state"])
    except StudentCodeError as exc:
        parts.notes.append(f"your save_checkpoint / load_checkpoint fail ({str(exc).splitlines()[0]}), "
                           f"charged by '{CHECKPOINT_TEST}'")
        return
    if not restored:
        parts.resume_optimizer = False
        parts.notes.append(f"your checkpoints do not restore AdamW's state, charged by '{CHECKPOINT_TEST}'; "
                           "this test already expects a resumed run with a fresh optimizer")
    if step == 0:
        parts.resume_step = False
    if step != 3:
        parts.notes.append(f"your load_checkpoint returns {step!r:.40} for a checkpoint saved at step 3, "
                           f"charged by '{CHECKPOINT_TEST}'" + ("; this test already expects the resumed "
                           "run to count from step 0" if step == 0 else ""))


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        return float(value.item())
    return None
