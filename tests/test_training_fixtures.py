"""The TinyGPT fixture (assignments/tests/fixtures_training.py) that the training stage's tests train."""

import pytest
import torch
import torch.nn.functional as F

from grader.engine.remote import RemoteSubmission
from grader.worker import fixtures

KWARGS = dict(vocab_size=13, block_size=6, d_model=8, n_layers=2, n_heads=2)

MODULE = '''
import torch

def one_step(model):
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    idx = torch.arange(12).view(2, 6) % 13
    _, loss = model(idx, idx)
    loss.backward()
    opt.step()
    return loss.item()
'''


def build(**changes):
    return fixtures.build("TinyGPT", [], dict(KWARGS, **changes))


def test_deterministic_from_the_seed_and_tied():
    a, b, c = build(seed=1), build(seed=1), build(seed=2)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    assert not torch.equal(a.tok_emb.weight, c.tok_emb.weight)
    assert a.lm_head.weight is a.tok_emb.weight
    names = [n for n, _ in a.named_parameters()]
    assert "lm_head.weight" not in names and "tok_emb.weight" in names
    dims = {p.dim() for p in a.parameters()}
    assert dims == {1, 2}                       # matrices and vectors: both optimizer groups are used
    values = [tuple(p.detach().flatten().tolist()) for p in a.parameters()]
    assert len(set(values)) == len(values)      # no two parameters equal: tests match them by value


def test_forward_loss_and_block_size():
    model = build(seed=3)
    idx = torch.randint(13, (2, 6), generator=torch.Generator().manual_seed(0))
    logits, loss = model(idx, idx)
    assert logits.shape == (2, 6, 13)
    assert torch.allclose(loss, F.cross_entropy(logits.reshape(-1, 13), idx.reshape(-1)))
    assert model(idx)[1] is None
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 7, dtype=torch.int64))
    # causal: the logits at position 2 do not depend on later tokens
    other = idx.clone()
    other[:, 3:] = (other[:, 3:] + 1) % 13
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(idx)[0][:, :3], model(other)[0][:, :3], atol=1e-6)


def test_counters_and_freeze():
    model = build(seed=4, freeze=["pos_emb.weight", "ln_f.bias"])
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["pos_emb.weight", "ln_f.bias"]
    idx = torch.zeros(1, 3, dtype=torch.int64)
    model.train()
    model(idx)
    model.eval()
    with torch.no_grad():
        model(idx)
    assert (model.grad_calls, model.train_mode_calls) == (1, 1)


def test_step_grads_record_what_the_optimizer_sees():
    model, other = build(seed=5, record_steps=2), build(seed=6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    other_opt = torch.optim.SGD(other.parameters(), lr=1e-3)
    idx = torch.arange(12).view(2, 6) % 13
    for _ in range(3):
        opt.zero_grad()
        model(idx, idx)[1].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
        expected = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
        other(idx, idx)[1].backward()
        other_opt.step()                        # another model's optimizer is not recorded
    assert len(model.step_grads) == 2           # only the first record_steps steps
    last = model.step_grads[1]
    assert set(last) == set(expected)
    total = torch.sqrt(sum((g ** 2).sum() for g in last.values()))
    assert abs(total.item() - 1e-3) < 1e-6      # recorded after clipping, before the step


def test_built_in_the_worker_like_here(make_submission, session_for):
    remote = RemoteSubmission(session_for(make_submission({"m.py": MODULE})))
    model = remote.fixture("TinyGPT", seed=7, record_steps=1, **KWARGS)
    local = build(seed=7, record_steps=1)
    state = model.state_dict()
    for name, value in local.state_dict().items():
        assert torch.equal(state[name], value), name
    loss = remote.m.one_step(model)
    expected = local(torch.arange(12).view(2, 6) % 13, torch.arange(12).view(2, 6) % 13)[1].item()
    assert abs(loss - expected) < 1e-6
    grads = model.step_grads
    assert len(grads) == 1 and grads[0]["tok_emb.weight"].shape == (13, 8)
    assert model.grad_calls == 1
