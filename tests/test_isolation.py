"""The isolation layers seen from inside a worker, at the levels this machine can give in-process.

"full" (root: own uid, namespaces, seccomp, cgroups) and "minimal" (the layers a grader that
is not root gets: seccomp, rlimits, audit hook, and the template's clean-up). The Docker-like
"container" level needs the Python runtime readable by other uids, which it is not here
(/root is 0700): tests/hostile/ builds that level in a mount namespace of its own.
"""

import errno
import os
import time

import pytest
from click.testing import CliRunner

from grader.worker import identity, layers
from grader.worker.client import StudentException, WorkerCrashed

MODULE = '''
import ctypes, errno, os, signal, socket, subprocess, sys, time

def ids():
    return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "pid": os.getpid()}

def visible(paths):
    return [os.path.exists(p) for p in paths]

def processes():
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())

def program():
    subprocess.run(["/bin/true"])

def interpreter():
    subprocess.run([sys.executable, "-c", "print(1)"])

def libc_open(path):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.open(path.encode(), os.O_RDONLY)
    return fd if fd >= 0 else -ctypes.get_errno()

def inet():
    """socket() and connect() through libc: the audit hook sees neither, only the kernel does."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
    if fd < 0:
        return "socket", ctypes.get_errno()
    address = bytes([2, 0, 0, 80, 10, 255, 255, 1]) + bytes(8)   # sockaddr_in 10.255.255.1:80
    result = libc.connect(fd, address, len(address))
    return "connect", 0 if result == 0 else ctypes.get_errno()

def loopback(host_port):
    """Its own loopback works; the machine's (a server the test started) is not there."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=2)
    peer, _ = server.accept()
    client.send(b"ok")
    own = peer.recv(2)
    try:
        socket.create_connection(("127.0.0.1", host_port), timeout=2).close()
        host = "reached"
    except OSError as exc:
        host = type(exc).__name__
    return own, host

def unix_pair():
    a, b = socket.socketpair()
    a.send(b"x")
    return b.recv(1)

def write_into(path):
    with open(path, "w") as f:
        f.write("planted")

def swap_output(target):
    os.unlink("../output.txt")
    os.symlink(target, "../output.txt")
    print("after the swap")

def daemon(name):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)   # PR_SET_NAME: findable from outside
            time.sleep(300)
            os._exit(0)
        os._exit(0)
    time.sleep(0.3)
    return True

def fill_shm(megabytes):
    for i in range(megabytes // 8):   # files of 8 MiB: RLIMIT_FSIZE caps each file, not their sum
        with open(f"/dev/shm/llmgrade-hog-{i}", "wb") as f:
            f.write(b"x" * 8 * 2**20)
    time.sleep(2)   # the watchdog looks every 50 ms
    return sum(os.path.getsize(f"/dev/shm/{name}") for name in os.listdir("/dev/shm"))

def spin(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass

def rename(name):
    ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)   # PR_SET_NAME
    return True

def daemon(name):
    """A setsid daemon, double-forked: outside the worker's process group, adopted by the template."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)
            time.sleep(60)
        os._exit(0)
    time.sleep(0.2)
    return True

def sysv_shm():
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.shmget(0, 4096, 0o1000 | 0o600), ctypes.get_errno()
'''


def _session(make_submission, session_for):
    folder = make_submission({"m.py": MODULE})
    session = session_for(folder, timeout=10.0)

    def call(name, *args):
        module = session.request({"op": "import", "module": "m"})
        fn = session.request({"op": "getattr", "target": module, "name": name})
        return session.request({"op": "call", "target": fn, "args": list(args), "kwargs": {}, "backward": None})

    call.session = session
    return call


@pytest.fixture
def full(make_submission, session_for, monkeypatch):
    monkeypatch.delenv(layers.OFF_VARIABLE, raising=False)
    iso = layers.isolation()
    if iso.level != "full":
        pytest.skip(f"this machine gives isolation level {iso.level!r}, not full: "
                    + "; ".join(f"{n}: {d}" for n, a, d in iso.report() if not a))
    return _session(make_submission, session_for)


@pytest.fixture
def minimal(make_submission, session_for, monkeypatch):
    monkeypatch.setenv(layers.OFF_VARIABLE, "uid,namespaces,cgroups")
    if not layers.isolation().seccomp:
        pytest.skip(f"no seccomp here: {layers.isolation().detail['seccomp']}")
    return _session(make_submission, session_for)


def test_full_worker_has_its_own_uid_and_pid_namespace(full):
    seen = full("ids")
    assert identity.FIRST_UID <= seen["uid"] < identity.FIRST_UID + identity.POOL_SIZE
    assert seen["gid"] == seen["uid"] and seen["groups"] == []
    assert seen["pid"] == 1                      # process 1 of its own namespace
    assert full("processes") == [1]              # the grader, pytest, every other process: invisible


def test_full_worker_sees_an_allow_list_of_files(full, tmp_path):
    import grader
    from grader.course.stages import project_root

    paths = [str(project_root() / "solutions"), str(project_root() / "autograder_tests"), str(tmp_path),
             "/var", os.path.dirname(grader.__file__), os.path.dirname(os.__file__)]
    assert full("visible", paths) == [False, False, False, False, True, True]


def test_full_worker_cannot_write_the_runtime_or_the_grader(full):
    import grader

    target = os.path.join(os.path.dirname(grader.__file__), "planted.py")
    with pytest.raises(StudentException) as info:
        full("write_into", target)
    assert info.value.is_a("OSError")
    assert not os.path.exists(target)


def test_full_worker_network_is_loopback_only(full):
    import socket

    assert full("inet") == ("connect", errno.ENETUNREACH)   # the ordinary failure: no route
    assert full("unix_pair") == b"x"
    with socket.socket() as host_server:   # the machine's loopback: a worker must not reach it
        host_server.bind(("127.0.0.1", 0))
        host_server.listen(1)
        assert full("loopback", host_server.getsockname()[1]) == (b"ok", "ConnectionRefusedError")


@pytest.mark.parametrize("level", ["full", "minimal"])
def test_programs_are_refused_by_the_kernel(level, request):
    worker = request.getfixturevalue(level)
    for name in ("program", "interpreter"):
        with pytest.raises(StudentException) as info:
            worker(name)
        assert info.value.is_a("PermissionError"), info.value.message


@pytest.mark.parametrize("level", ["full", "minimal"])
def test_sysv_shared_memory_is_refused(level, request):
    result, err = request.getfixturevalue(level)("sysv_shm")
    assert result == -1 and err == errno.EPERM


def test_minimal_worker_refuses_internet_sockets_but_not_unix_ones(minimal):
    assert minimal("inet") == ("socket", errno.EPERM)
    assert minimal("unix_pair") == b"x"


def test_full_output_is_read_through_the_graders_descriptor(full, tmp_path):
    """A worker owns its folder: swapping output.txt for a link to a secret must not leak it."""
    secret = tmp_path / "secret.txt"
    secret.write_text("CANARY-OUTPUT-SWAP")
    os.chmod(tmp_path, 0o755)
    full.session.take_output()
    full("swap_output", str(secret))
    printed = full.session.take_output()
    assert "CANARY-OUTPUT-SWAP" not in printed


def test_memory_hidden_in_shm_counts(make_submission, session_for, monkeypatch):
    """The cgroup charges tmpfs pages: a worker cannot park memory in /dev/shm past its limit."""
    monkeypatch.delenv(layers.OFF_VARIABLE, raising=False)
    if not (layers.isolation().cgroups and layers.isolation().namespaces):
        pytest.skip("needs the cgroup and namespace layers (this machine: "
                    f"{layers.isolation().summary()})")
    folder = make_submission({"m.py": MODULE})
    session = session_for(folder, timeout=10.0, memory_limit=128 * 2**20)
    module = session.request({"op": "import", "module": "m"})
    fn = session.request({"op": "getattr", "target": module, "name": "fill_shm"})
    with pytest.raises(WorkerCrashed, match="memory"):
        session.request({"op": "call", "target": fn, "args": [200], "kwargs": {}, "backward": None})


@pytest.mark.parametrize("level", ["full", "minimal"])
def test_a_daemon_dies_with_its_worker(level, request):
    worker = request.getfixturevalue(level)
    name = f"llmgd{os.getpid() % 10000}{level[0]}"
    assert worker("daemon", name) is True
    assert _named(name), "the daemon did not start"
    worker.session.close()
    deadline = time.monotonic() + 5
    while _named(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _named(name)


def _named(name: str) -> list[int]:
    """Live processes whose name (/proc/<pid>/comm) is `name`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if comm == name and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def test_doctor_lists_every_layer():
    from grader.cli import cli

    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    for name in layers.LAYERS:
        assert name in result.output
    assert f"isolation level: {layers.isolation().level}" in result.output


def test_strict_refuses_without_namespaces(monkeypatch, tmp_path):
    from grader.cli import cli

    monkeypatch.setenv(layers.OFF_VARIABLE, "namespaces")
    result = CliRunner().invoke(cli, ["doctor", "--isolation", "strict"])
    assert result.exit_code == 1 and "namespaces is off" in result.output
    result = CliRunner().invoke(cli, ["grade", str(tmp_path), "--stage", "bigram", "--isolation", "strict",
                                      "--out", str(tmp_path / "r.json")], standalone_mode=False)
    assert isinstance(result.exception, Exception) and "namespaces is off" in str(result.exception)
    assert not (tmp_path / "r.json").exists()


def test_results_that_cannot_be_written_go_elsewhere_and_say_where(tmp_path):
    from grader.engine.results_json import ResultsNotWritten, write

    blocked = tmp_path / "results.json"
    blocked.mkdir()     # what a hostile worker would leave at the results path
    results = {"score": 1.0, "tests": []}
    with pytest.raises(ResultsNotWritten) as info:
        write(results, blocked)
    assert str(blocked) in str(info.value) and str(info.value.fallback) in str(info.value)
    assert '"score": 1.0' in info.value.fallback.read_text()
    info.value.fallback.unlink()
    assert write(results, tmp_path / "ok.json").read_text().startswith("{")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temporary left


@pytest.mark.parametrize("level", ["full", "minimal"])
@pytest.mark.slow
def test_workers_die_with_their_template(level, request):
    """A grading process killed mid-run must not leave its workers grading on as orphans."""
    import signal

    from grader.worker import forks

    worker = request.getfixturevalue(level)
    name = f"llmgt{os.getpid() % 10000}{level[0]}"
    assert worker("rename", name) is True
    assert _named(name)
    template = forks.template()
    os.kill(template.process.pid, signal.SIGKILL)
    template.process.wait(5)
    deadline = time.monotonic() + 5
    while _named(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _named(name)


def test_timing_measures_the_process_that_runs_the_code(full):
    """In a pid namespace the worker's pid is its supervisor's child: CPU time must be read there."""
    from grader.engine.timing import _process_cpu_seconds

    full("ids")
    worker = full.session.ensure_worker()
    assert worker.code_pid != worker.pid
    before = _process_cpu_seconds(worker.code_pid)
    full("spin", 0.3)
    assert _process_cpu_seconds(worker.code_pid) - before > 0.1


# Run as its own process, moved into OUTER (a memory cgroup with a limit, like a Slurm job's or a
# container's): the worker's groups nest inside it, so a worker cannot use the memory the job lacks.
_INSIDE_A_JOB = r"""
import os, sys
from pathlib import Path
outer = Path(sys.argv[1])
(outer / "cgroup.procs").write_text(str(os.getpid()))
from grader.worker.client import WorkerCrashed, WorkerOptions, WorkerSession
folder = Path(sys.argv[2])
session = WorkerSession(folder, WorkerOptions(hidden_paths=[]), default_timeout=60)
module = session.request({"op": "import", "module": "m"})
fill = session.request({"op": "getattr", "target": module, "name": "fill"})
session.request({"op": "call", "target": fill, "args": [1], "kwargs": {}, "backward": None})   # started
mine = [line for line in Path(f"/proc/{session.worker.code_pid}/cgroup").read_text().splitlines() if ":memory:" in line]
print("worker in", mine[0].split(":", 2)[2])
usage = int((outer / "memory.usage_in_bytes").read_text())
(outer / "memory.limit_in_bytes").write_text(str(usage + 200 * 2**20))   # 200 MB left for the job
try:
    session.request({"op": "call", "target": fill, "args": [600], "kwargs": {}, "backward": None})
    print("filled 600 MB")
except WorkerCrashed as exc:
    print("stopped:", exc)
session.close()
"""


@pytest.mark.slow
def test_worker_groups_nest_in_the_graders_own_cgroup(make_submission, tmp_path):
    """A job's memory limit (Slurm's cgroup, a container's) holds for its workers: their groups are
    made inside the grading process's own cgroup, not beside it at the hierarchy's top."""
    import subprocess
    import sys

    from grader.worker import cgroups

    if not layers.isolation().cgroups or cgroups.version() != 1:
        pytest.skip("needs the cgroup layer on cgroup v1 to make the job's group "
                    f"(this machine: {layers.isolation().summary()}, v{cgroups.version()})")
    outer = cgroups.ROOT / "memory" / cgroups._own_path("memory") / f"llmgrade-test-job-{os.getpid()}"
    outer.mkdir()
    folder = make_submission({"m.py": "def fill(mb):\n    global kept\n    kept = bytearray(mb * 2**20)\n"
                                      "    kept[::4096] = b'x' * len(kept[::4096])\n    return mb\n"})
    try:
        run = subprocess.run([sys.executable, "-c", _INSIDE_A_JOB, str(outer), str(folder)], capture_output=True,
                             text=True, timeout=120)
    finally:
        for pid in (outer / "cgroup.procs").read_text().split():
            os.kill(int(pid), 9)
        cgroups.remove_tree(outer)
    assert run.returncode == 0, run.stdout + run.stderr
    inside = "/" + str(outer.relative_to(cgroups.ROOT / "memory")) + "/" + cgroups.GROUP + "/"
    assert f"worker in {inside}" in run.stdout, run.stdout
    assert "stopped:" in run.stdout and "filled" not in run.stdout, run.stdout


def test_stale_worker_groups_go_only_when_their_owner_is_gone():
    """A grading killed outright leaves its workers' empty groups; the next worker of the same uid
    (its lease held, so no live grading owns them) and any worker removes the ones whose grading
    process has ended, never a group a live grading may have just made."""
    from grader.worker import cgroups

    if not layers.isolation().cgroups:
        pytest.skip(f"needs the cgroup layer (this machine: {layers.isolation().summary()})")
    pool = range(identity.FIRST_UID, identity.FIRST_UID + identity.POOL_SIZE)
    lease = identity.acquire()
    other_uid = next(u for u in pool if u != lease.uid)
    dead = _a_dead_pid()
    names = {"ours": cgroups.group_name(lease.uid, 1), "old_ours": f"worker-{lease.uid}-2",
             "other_uid": f"worker-u{other_uid}-3", "dead_pid": f"worker-p{dead}-4",
             "live_pid": cgroups.group_name(None, 5),
             "other_uid_dead_grading": f"worker-u{other_uid}-g{dead}-6",
             "other_uid_live_grading": f"worker-u{other_uid}-g{os.getpid()}-7"}
    parents = cgroups._parents(cgroups.version())
    try:
        for parent in parents:
            parent.mkdir(exist_ok=True)
            for name in names.values():
                (parent / name).mkdir()
        # At least ours: a grading of the other xdist process may have left stale groups too.
        assert cgroups.remove_stale(lease.uid, pool) >= 4 * len(parents)
        left = {key for key, name in names.items() if all((p / name).is_dir() for p in parents)}
        assert left == {"other_uid", "live_pid", "other_uid_live_grading"}
    finally:
        lease.release()
        for parent in parents:
            for name in names.values():
                if (parent / name).is_dir():
                    os.rmdir(parent / name)


def _a_dead_pid() -> int:
    import subprocess
    child = subprocess.Popen(["/bin/true"])
    child.wait()
    return child.pid


def test_a_closed_workers_groups_are_gone(make_submission, session_for):
    """Closing a worker removes its cgroup in every hierarchy (the pids group used to stay when
    the kernel still counted the killed task at the first rmdir)."""
    from grader.worker import cgroups

    if not layers.isolation().cgroups:
        pytest.skip(f"needs the cgroup layer (this machine: {layers.isolation().summary()})")
    session = session_for(make_submission({"m.py": "import subprocess\ndef run():\n"
                                                    "    return subprocess.run(['/bin/true']).returncode\n"}))
    folders = []
    for _ in range(5):
        assert session.request({"op": "import", "module": "m"}) is not None
        folders += session.worker.group.folders
        session.discard()
    left = [f for f in folders if os.path.isdir(f)]
    assert folders and not left, left


def test_a_closed_template_leaves_no_daemon(minimal):
    """Without cgroups, a setsid daemon survives its worker's process-group kill and is adopted
    by the template: closing the template (the grading process is done) must take it along,
    not hand it to init (the hostile r06_daemon route once rewrote results.json that way)."""
    from grader.worker import forks

    name = f"llmgd{os.getpid() % 10000}"
    assert minimal("daemon", name) is True
    assert _named(name)
    forks.template().close()   # no request after the adoption: the template's own kill of strays never ran
    deadline = time.monotonic() + 5
    while _named(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _named(name)
    for pid in left:   # ours, started above: never leave it running, even when the test fails
        os.kill(pid, 9)
    assert not left
