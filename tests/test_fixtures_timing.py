"""Grader fixtures built inside the worker, and timing on the grader's clock."""

import pytest
import torch

from grader.engine.remote import RemoteSubmission, StudentCodeError
from grader.engine.timing import cpu_time, run_time, wall_time
from grader.worker import fixtures

MODULE = '''
import time
import torch

def run(model, idx):
    return model(idx)

def nap(seconds):
    time.sleep(seconds)

def spin(seconds):
    # Spin for `seconds` of CPU, not of wall clock: beside a busy core, a wall-clock
    # spin gets only part of a CPU and the lower bound below would not hold.
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass

def lie_about_time(seconds):
    time.perf_counter = lambda: 0.0     # the worker's clock is the student's; the grader's is not
    time.monotonic = lambda: 0.0
    time.sleep(seconds)
'''


@pytest.fixture
def remote(make_submission, session_for):
    return RemoteSubmission(session_for(make_submission({"m.py": MODULE})))


def test_fixture_model_in_the_worker_matches_the_same_fixture_here(remote):
    idx = torch.tensor([[1, 2, 3], [4, 0, 9]])
    model = remote.fixture("ContextLM", vocab_size=11, block_size=4, seed=3)
    expected = fixtures.build("ContextLM", [], dict(vocab_size=11, block_size=4, seed=3))(idx)
    got = remote.m.run(model, idx)
    assert got.shape == (2, 3, 11) and torch.equal(got, expected)


def test_fixture_model_depends_on_the_whole_context_and_checks_block_size():
    model = fixtures.build("ContextLM", [], dict(vocab_size=7, block_size=3, returns_tuple=True))
    logits, loss = model(torch.tensor([[1, 2, 3]]))
    assert loss is None
    cropped, _ = model(torch.tensor([[2, 3]]))
    assert not torch.allclose(logits[:, -1], cropped[:, -1])   # the context matters
    with pytest.raises(ValueError, match="block_size"):
        model(torch.tensor([[1, 2, 3, 4]]))
    assert model.grad_calls == 2          # two calls above ran with gradient tracking on
    with torch.no_grad():
        model(torch.tensor([[1]]))
    assert model.grad_calls == 2


def test_unknown_fixture_is_an_error(remote):
    with pytest.raises(StudentCodeError, match="unknown fixture"):
        remote.fixture("NoSuchThing")


def test_wall_time_is_measured_by_the_grader(remote):
    # Upper bounds are loose: a loaded machine delays the wake-up, never shortens the nap.
    assert 0.045 <= wall_time(remote.m.nap, 0.05, repeat=3, warmup=1) <= 2.0
    # Patching the clock inside the worker changes nothing the grader measures.
    assert 0.045 <= wall_time(remote.m.lie_about_time, 0.05, repeat=3, warmup=1) <= 2.0


def test_wall_time_of_a_local_function():
    assert wall_time(torch.mm, torch.ones(8, 8), torch.ones(8, 8), repeat=3) < 0.5


def test_cpu_time_counts_work_not_waiting(remote):
    """CPU time is what the kernel counted for the worker: spinning counts, sleeping does not."""
    assert 0.045 <= cpu_time(remote.m.spin, 0.05, repeat=2, warmup=1) <= 0.2
    assert cpu_time(remote.m.nap, 0.05, repeat=2, warmup=1) < 0.02
    assert run_time(remote.m.nap, 0.05, device="cpu", repeat=2, warmup=1) < 0.02   # CPU: CPU time


def test_cpu_time_of_a_local_function_uses_one_thread():
    threads = torch.get_num_threads()
    seconds = cpu_time(torch.mm, torch.ones(64, 64), torch.ones(64, 64), repeat=5)
    assert 0 < seconds < 0.5 and torch.get_num_threads() == threads
