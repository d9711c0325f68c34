"""Public tests of stage `training`: run them with `llmgrade check training`.

The expected values are the handout's worked numbers (08-training.md), small enough
to check by hand, and a short smoke run of `train` on the grader's small model
TinyGPT with the first 20,000 characters of datasets/shakespeare.txt. The hidden
tests check much more: exact batches and generator use, the optimizer's groups, the
gradients your optimizer sees under accumulation and clipping, checkpoint resume,
and a budgeted run graded by the validation loss the grader measures itself.
"""

import math

import pytest
import torch

from grader.testing import CheckFailure, expect_close, expect_equal, expect_scalar, project_root

pytestmark = pytest.mark.stage("training")

# Handout section 1: get_batch(torch.arange(100, 130), 4, 5, generator seeded 3) draws ix = [11, 23, 12, 17].
IX = [11, 23, 12, 17]
# Handout section 3: lr_at(step, max_lr=6e-4, min_lr=6e-5, warmup_steps=10, max_steps=110).
LRS = {0: 6e-5, 1: 1.2e-4, 4: 3e-4, 9: 6e-4, 10: 6e-4, 35: 5.20919e-4, 60: 3.3e-4,
       85: 1.39081e-4, 110: 6e-5, 500: 6e-5}


def test_get_batch_hand(student, device):
    """get_batch(torch.arange(100, 130), 4, 5): the handout's batch"""
    gen = torch.Generator().manual_seed(3)
    x, y = student.training.get_batch(torch.arange(100, 130), 4, 5, gen, device=device)
    expected_x = torch.tensor([[100 + i + j for j in range(5)] for i in IX], device=device)
    expect_close(x, expected_x, what="x", mistakes={})
    expect_close(y, expected_x + 1, what="y (the next token of every position of x)",
                 mistakes={"y = x: the targets must be shifted by one position": expected_x})


def test_lr_hand(student):
    """lr_at(step, 6e-4, 6e-5, 10, 110): the handout's table"""
    for step, expected in LRS.items():
        got = student.training.lr_at(step, 6e-4, 6e-5, 10, 110)
        expect_scalar(got, expected, atol=0, rtol=1e-5, what=f"lr_at({step}, 6e-4, 6e-5, 10, 110)",
                      mistakes={"the warm-up starts from 0: use max_lr * (step + 1) / warmup_steps":
                                6e-4 * step / 10 if step < 10 else math.nan})


def test_optimizer_groups(student):
    """configure_optimizer: two groups, weight decay on dim >= 2 parameters only"""
    model = student.fixture("TinyGPT", vocab_size=81, block_size=8, d_model=16, n_layers=1, n_heads=2)
    groups = student.training.configure_optimizer(model, 1e-3, 0.1).param_groups
    expect_equal(len(groups), 2, what="len(optimizer.param_groups)")
    expect_equal([all(p.dim() >= 2 for p in groups[0]["params"]), all(p.dim() < 2 for p in groups[1]["params"])],
                 [True, True], what="group 0 holds the matrices (dim >= 2), group 1 the rest")
    expect_equal([g["weight_decay"] for g in groups], [0.1, 0.0], what="the groups' weight_decay")
    # tok_emb (81x16) is tied to lm_head: it must appear once. 1 layer: embeddings, in_proj,
    # out_proj, linear1, linear2 -> 6 matrices (tok_emb, pos_emb, 4 in the layer).
    expect_equal(len(groups[0]["params"]), 6, what="the number of matrices (the tied weight counts once)")


def test_smoke_run(student, device):
    """train: 40 steps of TinyGPT on 20,000 characters of Shakespeare; the loss goes down"""
    text = (project_root() / "datasets" / "shakespeare.txt").read_text(encoding="utf-8")
    stoi = {ch: i for i, ch in enumerate(sorted(set(text)))}
    ids = torch.tensor([stoi[ch] for ch in text[:22000]], dtype=torch.int64)
    model = student.fixture("TinyGPT", vocab_size=len(stoi), block_size=16, d_model=32, n_layers=1,
                            n_heads=2, device=device)
    config = student.training.TrainConfig(batch_size=8, block_size=16, max_steps=40, max_lr=1e-2,
                                          min_lr=1e-3, warmup_steps=5, eval_interval=20, eval_steps=2,
                                          device=device)
    result = student.training.train(model, ids[:20000], ids[20000:], config)
    expect_equal(result["steps"], 40, what="result['steps']")
    losses = result["train_loss"]
    expect_equal(len(losses), 40, what="len(result['train_loss'])")
    if not math.log(81) - 0.3 < losses[0] < math.log(81) + 0.3:
        raise CheckFailure(f"the first step's loss is {losses[0]:.3f}; an untrained model should be near "
                           f"ln(81) = {math.log(81):.3f}")
    if not sum(losses[-5:]) / 5 < losses[0] - 0.8:
        raise CheckFailure(f"the loss barely went down in 40 steps: {losses[0]:.3f} -> {losses[-1]:.3f}")
