"""Hidden tests of stage `training`, part 4: the contract's defaults, device rules and checkpoints.

TrainConfig's documented defaults; where each function runs when its arguments disagree
about the device (get_batch's `device`, estimate_loss on the model's device whatever
config.device says, train on config.device with "auto" = cuda when available and bf16
autocast only on CUDA); and when train saves checkpoints (every eval_interval steps, at
stop_after, at the end), seen by stopping a run mid-way with the TrainProbeGPT fixture
(assignments/tests/fixtures_training.py), which also logs the device and autocast dtype of each forward.
"""

from __future__ import annotations

import pytest
import torch

from grader.testing import (CheckFailure, StudentCodeError, expect_close, expect_equal, expect_scalar,
                            expect_type)
from training_checks import SMALL, config_for, flat, remote_model, split

DEFAULTS = dict(batch_size=32, block_size=64, max_steps=1000, grad_accum_steps=1, max_lr=1e-3, min_lr=1e-4,
                warmup_steps=100, weight_decay=0.1, grad_clip=1.0, eval_interval=100, eval_steps=20,
                device="auto", dtype="auto", compile=False, seed=1337, checkpoint_path=None, stop_after=None)


def other_device(device: str) -> str:
    """The device a config names when it must disagree with the model's: on a CPU-only machine
    "cuda" (which a function that follows config.device instead of the model cannot use)."""
    return "cuda" if device == "cpu" else "cpu"


@pytest.mark.points(1)
def test_train_config_defaults(student):
    """TrainConfig() has the documented defaults"""
    config = student.training.TrainConfig()
    got = {}
    for name in DEFAULTS:
        try:
            got[name] = getattr(config, name)
        except StudentCodeError:
            got[name] = "<missing>"
    wrong = [f"{name} = {got[name]!r} (expected {want!r})" for name, want in DEFAULTS.items()
             if not (got[name] == want and type(got[name]) is type(want))]
    if wrong:
        raise CheckFailure("TrainConfig(): these fields do not have the documented defaults: " + "; ".join(wrong))


@pytest.mark.points(1)
def test_get_batch_device(student, device):
    """get_batch returns its batches on `device` (default "cpu"), given as a string or a torch.device"""
    # ECF: the values are compared with the student's own get_batch(..., device=<the data's device>),
    # so a mistake in the windows is charged by the get_batch value tests only.
    data = split("train")[:400].to(device)
    own = student.training.get_batch(data, 3, 8, torch.Generator().manual_seed(4), device)
    cases = [("device omitted (default 'cpu')", {}, "cpu"),
             ("device='cpu' passed explicitly", {"device": "cpu"}, "cpu"),
             (f"device=torch.device({device!r})", {"device": torch.device(device)}, device)]
    for label, kwargs, where in cases:
        x, y = student.training.get_batch(data, 3, 8, torch.Generator().manual_seed(4), **kwargs)
        for name, got, expected in (("x", x, own[0]), ("y", y, own[1])):
            if torch.device(got.device).type != torch.device(where).type:
                raise CheckFailure(f"get_batch(<400 ids on {device}>, 3, 8, {label}) returned {name} on "
                                   f"{got.device}, expected {where}")
            expect_close(got, expected.to(where), atol=0, rtol=0,
                         what=f"get_batch(<400 ids on {device}>, 3, 8, {label}): {name}, against your "
                              f"get_batch(..., device={device!r})")


@pytest.mark.points(1)
def test_estimate_loss_device(student, device):
    """estimate_loss runs on the device of the model's parameters, whatever config.device says"""
    # ECF: compared with the student's own estimate_loss when config.device agrees with the model.
    named = other_device(device)
    config = config_for(device, batch_size=3, block_size=8, eval_steps=2)
    model = remote_model(student, device, seed=3)
    val = split("val")[:3000]
    agreeing = student.training.estimate_loss(model, val, student.training.TrainConfig(**dict(
        config, device=device, dtype="float32")), torch.Generator().manual_seed(2))
    what = f"estimate_loss(TinyGPT on {device}, config.device={named!r})"
    try:
        got = student.training.estimate_loss(model, val, student.training.TrainConfig(**dict(
            config, device=named, dtype="float32")), torch.Generator().manual_seed(2))
    except StudentCodeError as exc:
        raise CheckFailure(f"{what} raised an error; estimate_loss must draw its batches and run on the "
                           f"device of the model's parameters (next(model.parameters()).device), whatever "
                           f"config.device says:\n{exc}") from None
    expect_scalar(got, agreeing, atol=0, rtol=1e-6,
                  what=f"{what}, against your estimate_loss with config.device={device!r}")


def grad_forwards(model) -> list[tuple]:
    """The training forwards (with gradients on) of a TrainProbeGPT, as (device, autocast dtype)."""
    return [(where, dtype) for where, dtype, _, grad in model.forward_log if grad]


@pytest.mark.points(2)
def test_train_device(student, device):
    """train runs on config.device ("auto": cuda when available) with bf16 autocast only on CUDA"""
    cuda = torch.cuda.is_available()
    if device == "cpu":     # the defaults ("auto" omitted, then passed), then "cpu" for a model elsewhere
        runs = [("device and dtype omitted ('auto')", device, {}, "cuda" if cuda else "cpu"),
                ("device='auto', dtype='auto' passed", device, {"device": "auto", "dtype": "auto"},
                 "cuda" if cuda else "cpu")]
        if cuda:
            runs.append(("device='cpu' for a model on cuda", "cuda", {"device": "cpu"}, "cpu"))
    else:                   # the model on the CPU, config.device naming the GPU
        runs = [(f"device={device!r}, dtype omitted, for a model on the cpu", "cpu", {"device": device}, "cuda")]
    for label, model_device, settings, where in runs:
        config = {k: v for k, v in config_for("cpu", max_steps=2, eval_interval=2).items()
                  if k not in ("device", "dtype")}
        config.update(settings)
        model = student.fixture("TrainProbeGPT", device=model_device, **dict(SMALL, seed=0))
        w0 = flat(model.state_dict())
        student.training.train(model, split("train")[:20000], split("val")[:5000],
                               student.training.TrainConfig(**config))
        what = f"train(TrainProbeGPT, {label})"
        log = grad_forwards(model)
        if not log:
            raise CheckFailure(f"{what}: the model was never run with gradients on")
        places = sorted({torch.device(d).type for d, _ in log})
        if places != [where]:
            raise CheckFailure(f"{what}: the training forwards ran on {', '.join(places)}, expected {where} "
                               f"(config.device decides where train runs; move the model there)")
        autocast = sorted({str(a) for _, a in log})
        want = ["torch.bfloat16" if where == "cuda" and torch.cuda.is_bf16_supported() else "None"]
        expect_equal(autocast, want, what=f"{what}: the autocast dtype of the training forwards "
                                         "(dtype 'auto': bf16 autocast on CUDA when supported, float32 on CPU)")
        if torch.equal(flat(model.state_dict()), w0):
            raise CheckFailure(f"{what}: the model's weights did not change (train must train `model` in place)")


@pytest.mark.points(2)
def test_train_checkpoint_schedule(student, device):
    """train saves a checkpoint every eval_interval steps, at stop_after and at the end, and resumes from it"""
    path = f"schedule-{device}.ckpt"
    config = config_for(device, max_steps=5, eval_interval=2, checkpoint_path=path)
    train, val = split("train")[:20000], split("val")[:5000]

    def run(what, seed, crash_at=None, **changes):
        model = student.fixture("TrainProbeGPT", device=device, crash_at=crash_at, **dict(SMALL, seed=seed))
        return student.training.train(model, train, val, student.training.TrainConfig(**dict(config, **changes)))

    # 1. a job stopped by the cluster in step 3's backward (0-based): steps 0-2 done, a checkpoint at step 2
    try:
        run("the first call", seed=0, crash_at=4)
        raise CheckFailure("train(TrainProbeGPT stopped during step 3): expected the stop to end the call")
    except StudentCodeError as exc:
        if "simulated preemption" not in str(exc):
            raise
    what = "train(max_steps=5, eval_interval=2, checkpoint_path) stopped during step 3, then called again"
    calls = [("with stop_after=1", dict(stop_after=1), 3, 1,
              "resume from the checkpoint saved at step 2 (every eval_interval steps), then run stop_after=1 "
              "step in this call"),
             ("without stop_after", {}, 5, 2, "resume from the checkpoint saved at stop_after (step 3), run to 5"),
             ("once more, after the run finished", {}, 5, 0,
              "resume from the checkpoint saved at the end (step 5): nothing is left to do")]
    for label, changes, steps, count, why in calls:
        result = run(label, seed=1, **changes)
        expect_type(result, dict, what=f"{what} {label}: train(...)")
        got = (result.get("steps"), len(result.get("train_loss") or []))
        if got != (steps, count):
            raise CheckFailure(f"{what} {label}: expected result['steps'] = {steps} and {count} train losses "
                               f"({why}), got steps = {got[0]!r:.40} and {got[1]} losses"
                               + diagnose(label, got))


def diagnose(label: str, got: tuple) -> str:
    """Name the mistake a (steps, number of losses) pair points to, for the checkpoint schedule test."""
    if label == "with stop_after=1" and got == (1, 1):
        return ("\nlooks like no checkpoint was saved at step 2 (save one every eval_interval steps: a job "
                "stopped between two saves loses only the steps since the last one), or the step count is "
                "not restored from it")
    if label == "with stop_after=1" and got[0] == 2 and got[1] == 0:
        return ("\nlooks like stop_after counts from step 0, not from the resumed step: stop after "
                "stop_after steps IN THIS CALL")
    if label.startswith("once more") and got[1] > 0:
        return "\nlooks like no checkpoint is saved at the end of the run: save one when train finishes"
    return ""
