"""The worker protocol and its failure modes, driven directly through WorkerSession."""

import os
import time

import pytest
import torch

from grader.worker.client import StudentException, WorkerCrashed, WorkerFailure, WorkerTimeout

MODULE = '''
import os, sys, time
import torch

def add(x, y=1):
    return x + y

def fail():
    helper()

def helper():
    raise KeyError("zzz")

def forever():
    while True:
        pass

def leave():
    os._exit(3)

def segfault():
    import ctypes
    ctypes.string_at(0)

def hog():
    return torch.ones(50 * 2**30, dtype=torch.uint8).sum()

def chatty():
    print("hello from the student")
    sys.stdout.write("\\x00\\x00\\x00\\x00{not a frame}")
    print("to stderr", file=sys.stderr)
    return 42

def draw(gen):
    return torch.randint(100, (4,), generator=gen)

def big():
    return torch.zeros(2**20, dtype=torch.uint8)

def corrupt():
    for fd in range(3, 64):
        try:
            os.write(fd, b"\\xff" * 8)
        except OSError:
            pass
    return 1

def read(path):
    return open(path).read()

def connect():
    import socket
    socket.create_connection(("127.0.0.1", 9))

def kill_pid(pid):
    os.kill(pid, 9)

def where():
    return {"cwd": os.getcwd(), "path": sys.path[:], "env": dict(os.environ)}

def square_sum(x):
    return (x ** 2).sum()

def lower_precision_then_read_it():
    torch.backends.cuda.matmul.allow_tf32 = True        # as if set at import or by an earlier call
    torch.set_float32_matmul_precision("medium")
    return 0

def precision():
    return [torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32]

class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
    def forward(self, x):
        return self.lin(x)
'''


@pytest.fixture
def worker(make_submission, session_for):
    folder = make_submission({"m.py": MODULE})
    session = session_for(folder, timeout=5.0)

    def call(name, *args, timeout=None, **kwargs):
        module = session.request({"op": "import", "module": "m"})
        fn = session.request({"op": "getattr", "target": module, "name": name})
        return session.request({"op": "call", "target": fn, "args": list(args), "kwargs": kwargs,
                                "backward": None}, timeout)

    call.session = session
    return call


def test_calls_round_trip(worker):
    assert worker("add", 2, y=3) == 5
    assert torch.equal(worker("add", torch.ones(2)), torch.full((2,), 2.0))


def test_exception_comes_back_as_data_with_student_frames_only(worker):
    with pytest.raises(StudentException) as info:
        worker("fail")
    exc = info.value
    assert exc.type_name == "KeyError" and exc.is_a("LookupError") and "zzz" in exc.message
    assert 'File "m.py"' in exc.traceback and "in helper" in exc.traceback
    assert "grader" not in exc.traceback


@pytest.mark.parametrize("name, error, message", [
    ("forever", WorkerTimeout, "did not finish within"),
    ("leave", WorkerCrashed, "exit code 3"),
    ("segfault", WorkerCrashed, "SIGSEGV"),
])
def test_failures_cost_one_call_and_a_fresh_worker_serves_the_next(worker, name, error, message):
    assert worker("add", 0) == 1
    generation = worker.session.generation
    with pytest.raises(error, match=message):
        worker(name, timeout=2.0)
    assert worker("add", 1) == 2
    assert worker.session.generation == generation + 1


def test_a_crashed_worker_is_not_waited_for_again(worker):
    """Its exit code, once collected (to say how it crashed), is not asked for again when the worker
    is closed: the template answers at once for a pid it no longer has (each crashed call of a
    submission once cost 0.5 s more, the wait's whole timeout)."""
    from grader.worker import forks

    worker("add", 0)
    pid = worker.session.worker.pid
    with pytest.raises(WorkerCrashed, match="exit code 3"):
        worker("leave")
    started = time.monotonic()
    assert forks.template().exit_code(pid, timeout=60.0) is None
    assert time.monotonic() - started < 10   # not the 60 s: nothing is waited for


def test_every_call_runs_with_tf32_off_and_highest_precision(worker):
    """The contract: TF32 off and "highest" float32 matmuls before each graded call."""
    assert worker("precision") == ["highest", False, False]
    worker("lower_precision_then_read_it")
    assert worker("precision") == ["highest", False, False]


def test_memory_hog_is_stopped(worker):
    with pytest.raises((StudentException, WorkerCrashed)) as info:
        worker("hog")
    assert "allocate" in str(info.value) or "memory" in str(info.value)
    assert worker("add", 1) == 2


def test_output_is_captured_apart_from_the_protocol(worker):
    assert worker("chatty") == 42
    printed = worker.session.take_output()
    assert "hello from the student" in printed and "to stderr" in printed
    assert worker.session.take_output() == ""


def test_forged_frames_are_a_protocol_failure(worker):
    with pytest.raises(WorkerFailure):
        worker("corrupt")
    assert worker("add", 1) == 2


def test_reply_size_cap(make_submission, session_for):
    session = session_for(make_submission({"m.py": MODULE}), max_bytes=2**19)
    module = session.request({"op": "import", "module": "m"})
    fn = session.request({"op": "getattr", "target": module, "name": "big"})
    with pytest.raises(StudentException, match="too large"):
        session.request({"op": "call", "target": fn, "args": [], "kwargs": {}, "backward": None})


def test_generator_state_comes_back(worker):
    gen, twin = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(worker("draw", gen), torch.randint(100, (4,), generator=twin))
    assert torch.equal(worker("draw", gen), torch.randint(100, (4,), generator=twin))


def test_hidden_paths_network_and_signals_are_refused(worker, tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "answers.txt").write_text("secret")
    with pytest.raises(StudentException, match="off limits"):
        worker("read", str(hidden / "answers.txt"))
    with pytest.raises(StudentException) as info:   # refused, or (own network namespace) nothing there
        worker("connect")
    assert "network access is not allowed" in info.value.message or info.value.is_a("ConnectionRefusedError")
    with pytest.raises(StudentException, match="signals"):
        worker("kill_pid", os.getpid())   # the grading process (invisible in a pid namespace)


def test_worker_sees_only_its_copy(worker, tmp_path):
    seen = worker("where")
    assert seen["cwd"].endswith("submission") and not seen["cwd"].startswith(str(tmp_path))
    assert not any(str(tmp_path / "hidden") in p for p in seen["path"])
    assert set(seen["env"]) <= {"PATH", "LANG", "LC_ALL", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                "CUDA_VISIBLE_DEVICES", "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "USER", "LOGNAME"}


def test_grader_never_unpickles(monkeypatch, worker):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("the grader unpickled something")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert worker("add", torch.ones(3)).sum() == 6


def test_backward_returns_input_and_parameter_gradients(worker):
    session = worker.session
    module = session.request({"op": "import", "module": "m"})
    fn = session.request({"op": "getattr", "target": module, "name": "square_sum"})
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    out = session.request({"op": "call", "target": fn, "args": [x], "kwargs": {},
                           "backward": {"grad_output": None, "output_index": None}})
    assert torch.equal(out["input_grads"][0], torch.tensor([2.0, -4.0]))
    cls = session.request({"op": "getattr", "target": module, "name": "Model"})
    model = session.request({"op": "call", "target": cls, "args": [], "kwargs": {}, "backward": None})
    out = session.request({"op": "call", "target": model, "args": [torch.ones(4, 3)], "kwargs": {},
                           "backward": {"grad_output": torch.ones(4, 2), "output_index": None}})
    assert torch.equal(out["param_grads"]["lin.bias"], torch.full((2,), 4.0))
    assert torch.equal(out["param_grads"]["lin.weight"], torch.full((2, 3), 4.0))


def test_workers_are_forked_from_one_template(make_submission, session_for):
    folder = make_submission({"m.py": MODULE})
    first, second = session_for(folder), session_for(folder)
    for session in (first, second):
        session.request({"op": "ping"})
    assert first.worker.template is second.worker.template
    assert first.worker.pid != second.worker.pid != os.getpid()


def test_a_sticky_cuda_error_costs_only_its_call(make_submission, session_for):
    """After a CUDA error (here simulated: no GPU needed) the next call gets a fresh worker."""
    folder = make_submission({"m.py": '''
state = []

def cuda_assert():
    state.append(1)
    raise RuntimeError("CUDA error: device-side assert triggered")

def ordinary_error():
    state.append(1)
    raise RuntimeError("shape mismatch")

def count():
    return len(state)
'''})
    session = session_for(folder)
    module = session.request({"op": "import", "module": "m"})
    assert session.generation == 1
    with pytest.raises(StudentException):
        session.request({"op": "call", "target": session.request({"op": "ref", "target": module, "name": "ordinary_error"}), "args": [], "kwargs": {}, "backward": None})
    assert session.generation == 1 and session.worker is not None
    with pytest.raises(StudentException, match="device-side assert"):
        session.request({"op": "call", "target": session.request({"op": "ref", "target": module, "name": "cuda_assert"}), "args": [], "kwargs": {}, "backward": None})
    assert session.worker is None        # discarded: the next request starts a fresh one
    session.ensure_worker()
    assert session.generation == 2


def test_worker_runs_torch_on_one_thread_by_default(make_submission, session_for):
    folder = make_submission({"m.py": "import torch\n\ndef threads():\n    return torch.get_num_threads()\n"})
    session = session_for(folder)
    module = session.request({"op": "import", "module": "m"})
    fn = session.request({"op": "ref", "target": module, "name": "threads"})
    assert session.request({"op": "call", "target": fn, "args": [], "kwargs": {}, "backward": None}) == 1


def test_a_worker_that_cannot_start_says_why(tmp_path):
    """A failure in the worker's own start-up (this machine's set-up, never the submission) exits
    with START_FAILED, its traceback last in the output file, and the grader's message names it."""
    from types import SimpleNamespace

    from grader.worker import sandbox, server
    from grader.worker.client import WorkerProcess

    output = tmp_path / "output.txt"
    config = sandbox.SandboxConfig(workdir=str(tmp_path), submission_dir=str(tmp_path / "missing"),
                                   output_path=str(output), memory_limit=None)
    requests, responses = os.pipe()
    pid = os.fork()
    if pid == 0:   # the worker's entry point, as the template calls it: chdir to a missing folder fails
        server.main(requests, responses, config)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == sandbox.START_FAILED
    assert "FileNotFoundError" in output.read_text()

    worker = WorkerProcess.__new__(WorkerProcess)   # only what _death reads
    worker.pid, worker.group = 0, None
    worker.template = SimpleNamespace(exit_code=lambda pid: sandbox.START_FAILED)
    worker.output_fd = os.open(output, os.O_RDONLY)
    try:
        message = worker._death()
    finally:
        os.close(worker.output_fd)
    assert message.startswith("grader error: the worker could not start: FileNotFoundError"), message
    assert "missing" in message


DAEMON_CHAIN = """
import os, time

def start(folder):
    '''A setsid daemon D whose child W outlives it: D's pid then W's written to folder.'''
    child = os.fork()
    if child == 0:
        os.setsid()
        if os.fork():
            os._exit(0)                      # D is orphaned: adopted by the template (subreaper)
        if os.fork() == 0:
            with open(os.path.join(folder, 'w'), 'w') as f:
                f.write(str(os.getpid()))
            time.sleep(120)                  # W
            os._exit(0)
        with open(os.path.join(folder, 'd'), 'w') as f:
            f.write(str(os.getpid()))
        time.sleep(120)                      # D
        os._exit(0)
    os.waitpid(child, 0)
    deadline = time.monotonic() + 20
    while not all(os.path.exists(os.path.join(folder, n)) for n in 'dw') and time.monotonic() < deadline:
        time.sleep(0.01)
    return [int(open(os.path.join(folder, n)).read()) for n in 'dw']
"""


def test_a_sweep_kills_what_a_killed_daemon_leaves_to_the_template(make_submission, session_for, monkeypatch, tmp_path):
    """Between two submissions the template kills every process it adopted, and again what it
    adopts as they die: a setsid daemon's child becomes the template's only once the daemon is
    dead (one pass left it alive, free to rewrite results.json while the grading process waited
    for its next submission: the hostile r06_daemon route at the user level, seen under load)."""
    from grader.worker import forks, layers

    monkeypatch.setenv(layers.OFF_VARIABLE, "uid,namespaces,cgroups,seccomp")   # orphans go to the template
    folder = make_submission({"chain.py": DAEMON_CHAIN})
    shared = tmp_path / "pids"
    shared.mkdir(mode=0o777)
    session = session_for(folder)
    start = session.request({"op": "ref", "target": session.request({"op": "import", "module": "chain"}),
                             "name": "start"})
    daemon, writer = session.request({"op": "call", "target": start, "args": [str(shared)], "kwargs": {},
                                      "backward": None})
    try:
        session.close()
        forks.template().sweep([])
        assert not _alive(daemon) and not _alive(writer), "the daemon's child outlived the sweep"
    finally:
        for pid in (daemon, writer):   # ours: started by this test's submission
            try:
                os.kill(pid, 9)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False
