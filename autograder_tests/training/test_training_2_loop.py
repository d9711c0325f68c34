"""Hidden tests of stage `training`, part 2: estimate_loss, train, checkpoints.

The submission trains the grader's TinyGPT inside the worker; the weights it leaves,
the gradients its optimizer saw (TinyGPT records them with an optimizer step
pre-hook) and the losses it reports are compared with the reference's on the same
config. Weights are compared by the relative size of the difference of the updates
(w - w0): Adam divides by sqrt(v), which magnifies float noise in a few
near-zero gradients, so an element-wise tolerance would be unfair.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from grader.testing import (CheckFailure, StudentCodeError, backward, expect_close, expect_equal,
                            expect_scalar, expect_type, reduction_atol, tolerance)
from training_checks import (EXACT_CONFIG, SMALL, config_for, expect_rel_close, flat, local_model,
                             remote_model, split, unclipped, variant_train)
from training_upstream import BATCH_TEST, REFERENCE, Parts, expect_either, read_checkpoint, read_parts

TRAIN, VAL = slice(0, 20000), slice(0, 5000)
UPDATE_RTOL = 1e-3      # of ||w - w0||; every named mistake moves the weights by > 5%
GRAD_RTOL = 1e-4


def data():
    return split("train")[TRAIN], split("val")[VAL]


def student_run(student, device, config, seed=0, record_steps=0, parts: Parts = REFERENCE):
    """The student's train on a fresh TinyGPT in the worker: (result dict, remote model). A failure
    of its train lists the upstream parts of the student's that differ (`parts.notes`)."""
    model = remote_model(student, device, seed=seed, record_steps=record_steps)
    train_data, val_data = data()
    try:
        result = student.training.train(model, train_data, val_data, student.training.TrainConfig(**config))
    except StudentCodeError as exc:
        if not parts.notes:
            raise
        raise parts.annotate(exc) from None
    return expect_type(result, dict, what="train(...)"), model


def recorded_run(student, device, config, parts: Parts, what: str, at_least: int):
    """student_run recording the gradients of the first 2 optimizer steps: (result, remote model,
    [the flat gradient at each step seen]); CheckFailure when fewer than `at_least` steps were seen."""
    result, model = student_run(student, device, config, record_steps=2, parts=parts)
    seen = model.step_grads
    if len(seen) < at_least:
        raise CheckFailure(f"{what}: expected {at_least} optimizer step{'s' if at_least > 1 else ''} over "
                           f"the model's parameters (optimizer.step() on an optimizer over them), saw {len(seen)}")
    return result, model, seen


def upstream(student, reference, device, config, seed=0, **which) -> Parts:
    """The student's lr_at / get_batch / configure_optimizer as this run uses them (ECF)."""
    c = dict(EXACT_CONFIG, **config)
    return read_parts(student, reference, device, c, data()[0], model_kwargs=dict(SMALL, seed=seed), **which)


def loss_atol(config, losses) -> float:
    """For a reported train loss: the mean of grad_accum_steps losses, each a mean over B·T
    positions, summed in any order (reduction_atol), or the 1e-4 that the weights' float drift
    over a few Adam steps needs, whichever is larger. With 4 x 4 x 16 = 256 terms of about 4.4
    that is max(1e-4, 6.8e-5); the named mistake (the sum of 4 losses) is 13 away."""
    n = config.get("grad_accum_steps", 1) * config["batch_size"] * config["block_size"]
    return max(1e-4, reduction_atol(n, max([abs(v) for v in losses] or [0.0])))


def losses_of(result, what) -> torch.Tensor:
    losses = result.get("train_loss")
    if not isinstance(losses, (list, tuple)) or not all(isinstance(v, (int, float)) for v in losses):
        raise CheckFailure(f"{what}: result['train_loss'] must be a list of floats, got {losses!r:.200}")
    return torch.tensor([float(v) for v in losses], dtype=torch.float32)


def update(state, w0) -> torch.Tensor:
    return flat(state) - w0


# ---- estimate_loss ------------------------------------------------------------------

@pytest.mark.points(2)
def test_estimate_loss_value(student, reference, device):
    """estimate_loss: the mean loss of eval_steps batches drawn with get_batch(generator)"""
    config = config_for(device, batch_size=5, block_size=12, eval_steps=4)
    val = split("val")[VAL]
    model = remote_model(student, device, seed=5)
    gen = torch.Generator().manual_seed(21)
    got = student.training.estimate_loss(model, val, student.training.TrainConfig(**config), gen)
    what = "estimate_loss(TinyGPT, val ids, batch 5, block 12, eval_steps=4)"
    candidates = estimate_expectations(student, reference, device, config, val, seed=21)
    failures = []
    for expected, state, note, bf16 in candidates:
        try:
            check_estimate(got, gen, expected, state, config, what, bf16)
            return
        except CheckFailure as failure:
            failures.append((failure, note))
    failure, _ = failures[0]
    notes = [note for _, note in failures if note]
    raise Parts(notes=notes).annotate(failure) from None


def estimate_expectations(student, reference, device, config, val, seed):
    """[(expected mean loss, generator state afterwards, note)]: from the student's own get_batch
    (ECF: its batches, read back in the worker), then from the reference's when they differ."""
    local = local_model(device, seed=5)

    def mean_loss(batches, bf16=False):
        with torch.no_grad(), (torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16
                               else contextlib.nullcontext()):
            losses = [local(x.to(device).long(), y.to(device).long())[1].item() for x, y in batches]
        return sum(losses) / len(losses)

    def draw(get_batch, generator):
        return [get_batch(val, config["batch_size"], config["block_size"], generator, device)
                for _ in range(config["eval_steps"])]

    ref_gen = torch.Generator().manual_seed(seed)
    ref_batches = draw(reference.get_batch, ref_gen)
    reference_case = (mean_loss(ref_batches), ref_gen.get_state(), None, lambda: mean_loss(ref_batches, True))
    probe = torch.Generator().manual_seed(seed)
    try:
        batches = draw(student.training.get_batch, probe)
        mine = (mean_loss(batches), probe.get_state(), None, lambda: mean_loss(batches, True))
    except (StudentCodeError, TypeError, ValueError, RuntimeError, IndexError, AttributeError):
        return [reference_case]
    if torch.equal(mine[1], ref_gen.get_state()) and all(
            torch.equal(a.cpu().long(), b.cpu()) for pair, ref in zip(batches, ref_batches) for a, b in zip(pair, ref)):
        return [mine]
    note = ("your get_batch draws other batches than the contract's, charged by "
            f"'{BATCH_TEST}'; this test first expected the mean loss over your get_batch's batches")
    return [mine, (*reference_case[:2], note, reference_case[3])]


def check_estimate(got, gen, expected, state, config, what, bf16):
    # The mean of eval_steps losses, each a mean over B·T positions: eval_steps·B·T = 240 terms
    # of about 4.4 in any order, reduction_atol 6.4e-5; the float32 elementwise tolerance
    # (1e-5 + 1e-4·4.4 = 4.5e-4) is the larger here. The named mistake (the sum of 4) is 13 away.
    atol, rtol = tolerance(torch.float32)
    atol = max(atol, reduction_atol(config["eval_steps"] * config["batch_size"] * config["block_size"],
                                    abs(expected)))
    sums = {"the losses are summed, not averaged over eval_steps": expected * config["eval_steps"],
            AUTOCAST: bf16}
    expect_scalar(got, expected, what=what, atol=atol, rtol=rtol, mistakes=sums)
    expect_close(gen.get_state(), state,
                 what="the generator's state afterwards (draw each of the eval_steps batches with "
                      "get_batch and the generator passed in)")


@pytest.mark.points(2)
def test_estimate_loss_mode(student, device):
    """estimate_loss runs in eval mode without gradients, restores the mode, keeps the weights"""
    model = remote_model(student, device, seed=6)
    config = student.training.TrainConfig(**config_for(device, batch_size=2, block_size=8, eval_steps=3))
    before = model.state_dict()
    for mode in (True, False):
        model.train(mode)
        grad_calls, train_calls = model.grad_calls, model.train_mode_calls
        student.training.estimate_loss(model, split("val")[VAL], config, torch.Generator().manual_seed(1))
        if model.grad_calls != grad_calls:
            raise CheckFailure("estimate_loss ran the model with gradients on: wrap the evaluation in "
                               "torch.no_grad() (no graph is needed to measure a loss)")
        if model.train_mode_calls != train_calls:
            raise CheckFailure("estimate_loss ran the model in training mode: call model.eval() first "
                               "(dropout must be off while measuring)")
        if model.training != mode:
            raise CheckFailure(f"estimate_loss left the model in {'training' if model.training else 'eval'} "
                               f"mode, but it was in {'training' if mode else 'eval'} mode before: "
                               "restore the previous mode (model.train(was_training))")
    after = model.state_dict()
    for name in before:
        expect_close(after[name], before[name], what=f"the weights after estimate_loss ({name})", atol=0, rtol=0)


# ---- train ----------------------------------------------------------------------------

AUTOCAST = ("the forwards run under bf16 autocast although the run is float32 (dtype 'auto' means "
            "float32 on the CPU; bf16 autocast only on CUDA)")


SEEDED_ONCE = ("the batches come from one generator seeded once; step s must draw its micro-batches with "
               "torch.Generator().manual_seed(config.seed + s)")


def train_mistakes(reference, device, config, w0, parts: Parts):
    def run(**knobs):
        return lambda: update(variant_train(reference, device, config, parts=parts, **knobs)[1].state_dict(), w0)
    return {
        "the warm-up starts from 0 (step 0 must use lr_at(0) = max_lr / warmup_steps)": run(warmup_from_zero=True),
        "the cosine decay is one step ahead": run(cosine_off_by_one=True),
        SEEDED_ONCE: run(seed_once=True),
        "weight decay is applied to every parameter (use configure_optimizer's two groups)": run(decay_all=True),
        "the gradients are not clipped before optimizer.step()": run(clip="none"),
        "each parameter's gradient is clipped on its own; clip the GLOBAL norm over all parameters":
            run(clip="per_param"),
        AUTOCAST: run(autocast_bf16=True),
    }


@pytest.mark.points(4)
def test_train_matches_reference(student, reference, device):
    """train: 6 steps (warm-up, cosine, clipping, weight decay): losses and weights as the reference's"""
    config = config_for(device)
    parts = upstream(student, reference, device, config)
    result, model = student_run(student, device, config, parts=parts)
    what = "train(TinyGPT, 6 steps, batch 4, block 16)"
    expect_equal(result.get("steps"), 6, what=f"{what}: result['steps']")
    w0 = flat(local_model(device).state_dict())
    got_update, got_losses = update(model.state_dict(), w0), losses_of(result, what)

    def check(p: Parts):
        losses, local = variant_train(reference, device, config, parts=p)
        expect_rel_close(got_update, update(local.state_dict(), w0),
                         what=f"{what}: the trained weights (their change w - w0)", rtol=UPDATE_RTOL,
                         mistakes=train_mistakes(reference, device, config, w0, p))
        expect_close(got_losses, torch.tensor(losses), atol=loss_atol(config, losses), rtol=1e-4,
                     what=f"{what}: result['train_loss'] (the mean micro-batch loss of each step)")
    expect_either(check, parts)


@pytest.mark.points(3)
def test_train_accumulation(student, reference, device):
    """train with grad_accum_steps=4: the optimizer sees the gradient of the mean loss"""
    config = config_for(device, grad_accum_steps=4, max_steps=2, grad_clip=1e6)
    what = "train(TinyGPT, grad_accum_steps=4, batch 4, no clipping)"
    parts = upstream(student, reference, device, config)
    result, model, seen = recorded_run(student, device, config, parts, what, at_least=1)
    got_losses = losses_of(result, what)
    w0 = flat(local_model(device).state_dict())
    got_update = update(model.state_dict(), w0)

    def check(p: Parts):
        losses, local = variant_train(reference, device, config, parts=p, record_steps=2)
        want = local.step_grads
        expect_rel_close(flat(seen[0]), flat(want[0]), rtol=GRAD_RTOL,
                         what=f"{what}: the gradient at the first optimizer.step()", mistakes={
            "the micro-batch losses are not divided by grad_accum_steps (the gradient is 4 times too large)":
                4 * flat(want[0]),
            "the gradients are zeroed before each micro-batch, so only the last one counts":
                lambda: flat(variant_train(reference, device, config, parts=p, record_steps=1,
                                           zero_grad_each_micro=True)[1].step_grads[0]),
            "only one micro-batch is used per step": lambda: flat(variant_train(
                reference, device, dict(config, grad_accum_steps=1), parts=p, record_steps=1)[1].step_grads[0]),
            AUTOCAST: lambda: flat(variant_train(reference, device, config, parts=p, record_steps=1,
                                                 autocast_bf16=True)[1].step_grads[0]),
        })
        expect_equal(len(seen), 2, what=f"{what}: the number of optimizer steps in a 2-step run")
        expect_rel_close(got_update, update(local.state_dict(), w0), rtol=UPDATE_RTOL,
                         what=f"{what}: the weights after 2 steps",
                         mistakes=train_mistakes(reference, device, config, w0, p))
        expected = torch.tensor(losses)
        expect_close(got_losses, expected, atol=loss_atol(config, losses), rtol=1e-4,
                     what=f"{what}: result['train_loss'] (the MEAN of the 4 micro-batch losses of each step)",
                     mistakes={"the reported loss is the sum of the micro-batch losses, not their mean":
                               4 * expected})
    expect_either(check, parts)


@pytest.mark.points(2)
def test_train_clipping(student, reference, device):
    """train clips the global gradient norm to grad_clip before optimizer.step()"""
    config = config_for(device, grad_clip=0.05, max_steps=2)
    what = "train(TinyGPT, grad_clip=0.05)"
    parts = upstream(student, reference, device, config)
    _, model, seen = recorded_run(student, device, config, parts, what, at_least=2)
    for step in range(2):
        norm = flat(seen[step]).norm().item()
        if norm > 0.05 * 1.001:
            raise CheckFailure(f"{what}: at optimizer step {step} the global gradient norm is {norm:.4g}, "
                               f"above grad_clip = 0.05: looks like {unclipped(seen[step], 0.05)}")

    def check(p: Parts):
        _, local = variant_train(reference, device, config, parts=p, record_steps=2)
        for step in range(2):
            variants = {
                "each parameter's gradient is clipped to norm grad_clip on its own; clip the GLOBAL norm "
                "(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))":
                    lambda: flat(variant_train(reference, device, config, parts=p, record_steps=2,
                                               clip="per_param")[1].step_grads[step]),
                "the gradients are clipped by value (clip_grad_value_), not by their global norm":
                    lambda: flat(variant_train(reference, device, config, parts=p, record_steps=2,
                                               clip="value")[1].step_grads[step]),
                AUTOCAST: lambda: flat(variant_train(reference, device, config, parts=p, record_steps=2,
                                                     autocast_bf16=True)[1].step_grads[step]),
                SEEDED_ONCE: lambda: flat(variant_train(reference, device, config, parts=p, record_steps=2,
                                                        seed_once=True)[1].step_grads[step]),
            }
            expect_rel_close(flat(seen[step]), flat(local.step_grads[step]), rtol=GRAD_RTOL, mistakes=variants,
                             what=f"{what}: the gradient at optimizer step {step}")
    expect_either(check, parts)


def test_train_result(student, reference, device):
    """train returns steps, train_loss (one per step), val_loss (every eval_interval) and tokens_per_sec"""
    config = config_for(device, max_steps=4, eval_interval=2)
    result, _ = student_run(student, device, config)
    what = "train(TinyGPT, max_steps=4, eval_interval=2)"
    expect_equal(sorted(k for k in result if k in ("steps", "train_loss", "val_loss", "tokens_per_sec")),
                 ["steps", "tokens_per_sec", "train_loss", "val_loss"], what=f"{what}: the result's keys")
    expect_equal(result["steps"], 4, what=f"{what}: result['steps']")
    expect_equal(len(losses_of(result, what)), 4, what=f"{what}: len(result['train_loss'])")
    val = result["val_loss"]
    if (not isinstance(val, (list, tuple)) or len(val) < 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in val)):
        raise CheckFailure(f"{what}: result['val_loss'] should hold at least 2 evaluations (steps 2 and 4), "
                           f"one float each, got {val!r:.200}")
    speed = result["tokens_per_sec"]
    if not isinstance(speed, (int, float)) or not speed > 0:
        raise CheckFailure(f"{what}: result['tokens_per_sec'] should be a positive number, got {speed!r:.100}")


# ---- checkpoints ------------------------------------------------------------------------

@pytest.mark.points(2)
def test_checkpoint_round_trip(student, device):
    """save_checkpoint / load_checkpoint restore the model, AdamW's state and the step"""
    what = "save_checkpoint then load_checkpoint into a fresh model and optimizer"
    model = remote_model(student, device, seed=8)
    optimizer = student.training.configure_optimizer(model, 1e-2, 0.1)
    x = split("train")[:64].view(4, 16).to(device)
    y = split("train")[1:65].view(4, 16).to(device)
    for _ in range(2):
        backward(model, x, y, output_index=1)
        optimizer.step()
    path = f"roundtrip-{device}.ckpt"
    student.training.save_checkpoint(path, model, optimizer, 7)
    fresh = remote_model(student, device, seed=9)
    fresh_optimizer = student.training.configure_optimizer(fresh, 1e-2, 0.1)
    step = student.training.load_checkpoint(path, fresh, fresh_optimizer)
    expect_equal(step, 7, what=f"{what}: the step load_checkpoint returns")
    saved, loaded = model.state_dict(), fresh.state_dict()
    for name in saved:
        expect_close(loaded[name], saved[name], atol=0, rtol=0, what=f"{what}: model weight {name}")
    saved_state = optimizer.state_dict()["state"]
    loaded_state = fresh_optimizer.state_dict()["state"]
    if not loaded_state:
        raise CheckFailure(f"{what}: the optimizer's state (AdamW's moment estimates) was not restored: "
                           "save optimizer.state_dict() in the checkpoint and load it back")
    expect_equal(sorted(loaded_state), sorted(saved_state), what=f"{what}: the optimizer state's entries")
    for key in saved_state:
        for name in ("exp_avg", "exp_avg_sq"):
            expect_close(loaded_state[key][name], saved_state[key][name], atol=0, rtol=0,
                         what=f"{what}: optimizer state {key} {name}")
    for label, extra in (("load_checkpoint(path, model) without an optimizer", ()),
                         ("load_checkpoint(path, model, None)", (None,))):
        other = remote_model(student, device, seed=10)
        expect_equal(student.training.load_checkpoint(path, other, *extra), 7, what=label)
        restored = other.state_dict()
        for name in saved:
            expect_close(restored[name], saved[name], atol=0, rtol=0, what=f"{label}: model weight {name}")


@pytest.mark.points(4)
def test_checkpoint_resume(student, reference, device):
    """train stopped with stop_after and resumed gives the same losses as a run never stopped"""
    config = config_for(device)
    what = "train(6 steps) stopped after 3 with stop_after=3, then resumed from the checkpoint"
    # ECF: a round trip through the student's own save/load tells whether AdamW's state and the
    # step come back; when not, the expectation is a resumed reference run that loses them too.
    probe = Parts()
    read_checkpoint(student, device, dict(EXACT_CONFIG, **config), dict(SMALL, seed=0), probe)
    whole, whole_model = student_run(student, device, config)
    path = f"resume-{device}.ckpt"
    first, _ = student_run(student, device, dict(config, checkpoint_path=path, stop_after=3), parts=probe)
    second, resumed_model = student_run(student, device, dict(config, checkpoint_path=path), seed=1, parts=probe)
    expect_equal(first.get("steps"), 3, what=f"{what}: result['steps'] of the first call")
    expect_equal(second.get("steps"), 6, what=f"{what}: result['steps'] of the resumed call "
                                            "(steps completed, the resumed ones included)")
    got = torch.cat([losses_of(first, what), losses_of(second, what)])
    w0 = flat(local_model(device).state_dict())
    got_update = update(resumed_model.state_dict(), w0)
    parts = upstream(student, reference, device, config) if probe.differs else Parts()
    parts.resume_optimizer, parts.resume_step = probe.resume_optimizer, probe.resume_step
    parts.notes = probe.notes + parts.notes

    def expected_variant(**kw):
        kw = dict(dict(resume_optimizer=parts.resume_optimizer, resume_step=parts.resume_step), **kw)
        return variant_train(reference, device, config, parts=parts, resume_at=3, **kw)

    if probe.differs:
        losses, model = expected_variant()
        want, want_update = torch.tensor(losses), update(model.state_dict(), w0)
    else:
        want, want_update = losses_of(whole, what), update(whole_model.state_dict(), w0)
    try:
        expect_close(got, want, atol=loss_atol(config, want.tolist()), rtol=1e-4,
                     what=f"{what}: the train losses of both calls, joined (expected those of the run never stopped)",
                     mistakes={
                         "the optimizer state (AdamW's moments) is not saved in / restored from the checkpoint":
                             lambda: torch.tensor(expected_variant(resume_optimizer=False)[0]),
                         "the step count is not restored: the resumed run starts the schedule and the "
                         "batches from step 0 again": lambda: torch.tensor(expected_variant(resume_step=False)[0]),
                         "the batches come from one generator seeded once per call: step s must use "
                         "torch.Generator().manual_seed(config.seed + s)":
                             lambda: torch.tensor(expected_variant(seed_once=True)[0]),
                     })
        expect_rel_close(got_update, want_update, rtol=UPDATE_RTOL,
                         what=f"{what}: the weights at the end, against the run never stopped")
    except CheckFailure as failure:
        raise parts.annotate(failure) from None
