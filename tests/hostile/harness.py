"""Running one isolation level's batch of hostile submissions, and cleaning up after it.

    run = run_level("full", base)   # grades every route in one `llmgrade grade-all` batch

Levels:
  full       as is (the grader is root with CAP_SYS_ADMIN; CI runs as root);
  container  root without CAP_SYS_ADMIN and with the cgroup mounts read-only (Docker's default
             profile), in a private mount namespace where the Python runtime is exposed to other
             uids (it lies under /root, mode 0700, on these machines);
  user       uid 65532 (no passwd entry needed), same mount namespace.

Every command this harness starts runs in a cgroup of its own (v1 pids, one per batch), a safety net
that bounds it and lets the harness kill exactly what it started; and every process of the worker
uid pool (62000..62255) that appeared during the batch and carries the routes' name (`hx-...`)
or sits in that cgroup is killed afterwards and reported as a leftover.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from grader import scratch
from grader.worker import cgroups, identity

from .routes import PARTIAL, ROUTES, hostile_source

REPO = Path(__file__).resolve().parents[2]
POOL = range(identity.FIRST_UID, identity.FIRST_UID + identity.POOL_SIZE)
USER_UID = 65532
CGROUP_V1 = Path("/sys/fs/cgroup")
CAPS = "-all,+chown,+dac_override,+fowner,+fsetid,+kill,+setgid,+setuid,+setpcap,+net_bind_service," \
       "+net_raw,+sys_chroot,+mknod,+audit_write,+setfcap"   # Docker's default capabilities
BATCH_TIMEOUT = 240
SHARED = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")   # where a route leaves files
CONTROL, PARTIAL_ID, VICTIM = "a_control", "a_partial", "r08_victim"
CONTROL_B = "b_control"   # the control of the user level's batch of the route that kills the grader


@dataclass
class Batch:
    ids: list[str]
    out: Path
    returncode: int | None = None
    output: str = ""
    seconds: float = 0.0

    def results(self, sid: str) -> dict | None:
        try:
            return json.loads((self.out / sid / "results.json").read_text())
        except (OSError, ValueError):
            return None

    def score(self, sid: str) -> float | None:
        results = self.results(sid)
        return None if results is None else results.get("score")

    def gradebook(self) -> dict[str, dict]:
        try:
            with open(self.out / "gradebook.csv", newline="") as f:
                return {row["id"]: row for row in csv.DictReader(f)}
        except OSError:
            return {}


@dataclass
class Leftover:
    batch: int          # index in LevelRun.batches of the batch whose cgroup it is in
    pid: int
    name: str
    uid: str
    cmdline: str

    def __str__(self) -> str:
        return f"pid {self.pid} {self.name!r} uid {self.uid} batch {self.batch}: {self.cmdline}"


@dataclass
class LevelRun:
    level: str
    base: Path
    course: Path
    other_course: Path
    canaries: list[str]
    marker: str
    batches: list[Batch] = field(default_factory=list)
    doctor: str = ""
    leftover_processes: list[Leftover] = field(default_factory=list)
    leftover_files: list[str] = field(default_factory=list)
    shm_before: str = ""
    shm_after: str = ""
    plants: list[str] = field(default_factory=list)
    planted: list[str] = field(default_factory=list)     # of the plants, those that existed after the batch
    seconds: float = 0.0

    def batch_of(self, sid: str) -> Batch:
        return next(b for b in self.batches if sid in b.ids)

    def texts(self) -> dict[str, str]:
        """Every output of every batch: results, feedback pages, gradebooks, command output."""
        found = {}
        for batch in self.batches:
            found[f"command output ({batch.ids[0]}...)"] = batch.output
            for path in batch.out.rglob("*"):
                if path.is_file():
                    found[str(path)] = path.read_text(errors="replace")
        return found


# ---------------------------------------------------------------- what this machine allows

def level_unavailable(level: str) -> str:
    """'' when `level` can run here, else why not (a skip)."""
    if os.geteuid() != 0:
        return "the hostile levels are staged as root (they drop privileges themselves)"
    if level == "full":
        return ""
    for tool in ("unshare", "setpriv", "mount"):
        if not shutil.which(tool):
            return f"{tool} (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode:
        return f"cannot make a mount namespace here: {probe.stderr.decode().strip()}"
    return ""


def cgroup_safety_net(name: str) -> list[Path] | None:
    """Our own v1 pids cgroup (None where there is none): bounds and names what the harness starts."""
    folders = []
    for controller in ("pids",):
        parent = CGROUP_V1 / controller
        if not parent.is_dir():
            return None
        folder = parent / name
        try:
            folder.mkdir(exist_ok=True)
            (folder / "pids.max").write_text("3000")
        except OSError:
            return None
        folders.append(folder)
    return folders


def cgroup_pids(folders: list[Path] | None) -> set[int]:
    pids: set[int] = set()
    for folder in folders or []:
        try:
            pids |= {int(p) for p in (folder / "cgroup.procs").read_text().split()}
        except (OSError, ValueError):
            pass
    return pids


# ---------------------------------------------------------------- the course copies and submissions

def make_course(dest: Path, canary: str) -> Path:
    """A copy with only the bigram stage, its canary in the reference and the hidden tests."""
    (dest / "assignments" / "handouts").mkdir(parents=True)
    shutil.copy(REPO / "assignments" / "handouts" / "02-bigram.md", dest / "assignments" / "handouts")
    shutil.copy(REPO / "assignments" / "bigram.py", dest / "assignments")
    shutil.copytree(REPO / "solutions", dest / "solutions")
    (dest / "autograder_tests").mkdir()
    shutil.copytree(REPO / "autograder_tests" / "bigram", dest / "autograder_tests" / "bigram",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "datasets").mkdir()
    shutil.copy(REPO / "datasets" / "names.txt", dest / "datasets")   # the bigram hidden tests read it
    line = f"# {canary}\n_CANARY = {canary!r}\n"
    reference = dest / "solutions" / "bigram.py"
    reference.write_text(line + reference.read_text())
    tests = dest / "autograder_tests" / "bigram" / "test_bigram.py"
    tests.write_text(line + tests.read_text())
    return dest


def make_submissions(run: LevelRun, batch_of: dict[str, int]) -> dict[str, str]:
    """<base>/subs<i>/<id>/bigram.py for each id of batch i; returns {id: bigram.py source}."""
    skeleton = (REPO / "assignments" / "bigram.py").read_text()
    import grader
    import site

    grader_dir = Path(grader.__file__).resolve().parent
    plants = [os.path.join(site.getsitepackages()[0], f"{run.marker}.pth"),
              str(grader_dir / f"{run.marker}.py")]
    run.plants = plants
    sources = {CONTROL: skeleton, CONTROL_B: skeleton, PARTIAL_ID: skeleton + PARTIAL, VICTIM: skeleton + PARTIAL}
    for route in ROUTES:
        sources[route] = hostile_source(
            skeleton, route, REF=str(run.course / "solutions" / "bigram.py"),
            RESULTS=str(run.base / f"out{batch_of.get(route, 0)}" / route / "results.json"),
            SUBS=str(run.base / f"subs{batch_of.get(route, 0)}"), SID=route, MARK=run.marker,
            OTHER=str(run.other_course / "solutions" / "bigram.py"),
            PLANTS=[(plants[0], "import os; os.system('echo pwned')\n"), (plants[1], "PWNED = True\n")])
    for sid, text in sources.items():
        if sid not in batch_of:
            continue
        folder = run.base / f"subs{batch_of[sid]}" / sid
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "bigram.py").write_text(text)
    return sources


# ---------------------------------------------------------------- the level's environment

def _blocked_ancestors() -> dict[str, list[str]]:
    """{first ancestor other users cannot pass: [its children on the runtime's paths]}."""
    blocked: dict[str, list[str]] = {}
    for path in {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.executable)}:
        current = Path("/")
        for part in Path(path).parts[1:]:
            child = current / part
            if not current.stat().st_mode & stat.S_IXOTH:
                if str(child) not in blocked.setdefault(str(current), []):
                    blocked[str(current)].append(str(child))
                break
            current = child
    return blocked


def namespace_script(stage: Path) -> str:
    """sh run in a private mount namespace: cgroups read-only, the runtime exposed to other uids."""
    lines = ["set -e"]
    with open("/proc/self/mounts") as mounts:
        cgroup_mounts = [line.split()[1] for line in mounts if line.split()[1].startswith("/sys/fs/cgroup")]
    for mount in sorted(cgroup_mounts, key=len, reverse=True):
        lines.append(f"mount -o remount,bind,ro '{mount}'")
    for i, (ancestor, children) in enumerate(sorted(_blocked_ancestors().items())):
        for j, child in enumerate(children):
            lines += [f"mkdir -p '{stage}/{i}-{j}'", f"mount --bind '{child}' '{stage}/{i}-{j}'"]
        lines.append(f"mount -t tmpfs -o mode=0711 tmpfs '{ancestor}'")
        for j, child in enumerate(children):
            lines += [f"mkdir -p '{child}'", f"mount --bind '{stage}/{i}-{j}' '{child}'",
                      f"umount '{stage}/{i}-{j}'"]
    return "; ".join(lines)


def wrap(level: str, command: list[str], stage: Path) -> list[str]:
    if level == "full":
        return command
    if level == "container":
        inner = namespace_script(stage) + f'; exec setpriv --bounding-set {CAPS} -- "$@"'
    else:
        inner = namespace_script(stage) + (f'; exec setpriv --reuid {USER_UID} --regid {USER_UID} '
                                           f'--clear-groups --bounding-set -all -- "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", inner, "sh", *command]


def llmgrade() -> list[str]:
    found = shutil.which("llmgrade", path=os.path.dirname(sys.executable))
    return [found] if found else [sys.executable, "-m", "grader"]


def environment(run: LevelRun) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "LLMGRADE_"))}
    env.update(LLMGRADE_ROOT=str(run.course), PYTHONDONTWRITEBYTECODE="1", COLUMNS="200")
    if run.level == "user":
        env["HOME"] = str(run.base / "home")
    return env


def execute(run: LevelRun, command: list[str], net: list[Path] | None, timeout: float) -> tuple[int | None, str]:
    """Run `command` at the level, inside the safety-net cgroup; (returncode or None on timeout, output)."""
    def join_net():
        for folder in net or []:
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(wrap(run.level, command, run.base / "stage"), stdout=log,
                                   stderr=subprocess.STDOUT, env=environment(run), cwd=run.base,
                                   preexec_fn=join_net, start_new_session=True)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
            kill_started(process.pid, net)
            process.wait(10)
        log.seek(0)
        return code, log.read().decode(errors="replace")


def kill_started(pid: int, net: list[Path] | None) -> None:
    """SIGKILL what this harness started: the command's session, and everything in its cgroup."""
    try:
        if pid:
            os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(200):
        pids = cgroup_pids(net)
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


# ---------------------------------------------------------------- leftovers

def _status(pid: str) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except (OSError, ValueError):
        return {}


def _uid(pid: int) -> str:
    return (_status(str(pid)).get("Uid", "?").split() or ["?"])[0]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:160]
    except OSError:
        return "?"


def pool_processes() -> dict[int, str]:
    """{pid: name} of live processes of the worker uid pool."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            status = _status(name)
            uids = status.get("Uid", "").split()[:2]
            if status.get("State", "Z")[:1] not in "ZX" and any(int(u) in POOL for u in uids):
                found[int(name)] = status.get("Name", "?")
    return found


def _shared_paths():
    """Every path in the shared folders (/tmp, /dev/shm, ...), two levels deep at most."""
    for folder in SHARED:
        for root, dirs, files in os.walk(folder):
            if root.count(os.sep) - folder.count(os.sep) >= 2:
                dirs[:] = []
            for name in dirs + files:
                yield os.path.join(root, name)


def files_marked(marker: str) -> list[str]:
    return [path for path in _shared_paths()
            if marker in os.path.basename(path) and "-shared" not in os.path.basename(path)]


def files_of_pool(before: set[str]) -> list[str]:
    found = []
    for path in _shared_paths():
        if path.startswith("/tmp/llmgrade-"):   # work roots: the grader's, and other runs' live ones
            continue
        try:
            uid = os.lstat(path).st_uid
        except OSError:
            continue
        if uid in POOL and path not in before:
            found.append(path)
    return found


def sysv_shm() -> str:
    try:
        return "\n".join(sorted(Path("/proc/sysvipc/shm").read_text().splitlines()[1:]))
    except OSError:
        return ""


def remove_marked(marker: str) -> None:
    for path in files_marked(marker):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


# ---------------------------------------------------------------- one level

def plan(level: str) -> list[list[str]]:
    """The batches of a level: every route in one, but at the user level, where a route that
    takes down the batch (killing the grader) or rewrites the other students' files is run on
    its own batch (with the submissions it targets), the daemon and the flood are graded last
    by their grading processes (in a batch of two), and the fork bomb is not run at all."""
    everything = [CONTROL, PARTIAL_ID, *ROUTES, VICTIM]
    if level != "user":
        return [sorted(everything)]
    alone = {"r07_kill_grader": [CONTROL_B], "r08_overwrite": [VICTIM],
             # each the last submission of its grading process: what it leaves outlives the template
             "r06_daemon": ["r14_flood"]}
    main = [sid for sid in everything if sid not in alone and sid not in (VICTIM, "r13_fork_bomb", "r14_flood")]
    return [sorted(main)] + [sorted([sid, *with_]) for sid, with_ in alone.items()]


def run_level(level: str, root: Path) -> LevelRun:
    started = time.monotonic()
    token = uuid.uuid4().hex[:10]
    base = Path(tempfile.mkdtemp(prefix="hostile-test-", dir=root))
    os.chmod(base, 0o755)
    other_root = Path(tempfile.mkdtemp(prefix="hostile-test-other-", dir="/srv" if os.path.isdir("/srv") else None))
    os.chmod(other_root, 0o755)
    run = LevelRun(level=level, base=base, course=make_course(base / "course", f"LLMGRADE-CANARY-{token}-A"),
                   other_course=make_course(other_root / "course", f"LLMGRADE-CANARY-{token}-B"),
                   canaries=[f"LLMGRADE-CANARY-{token}-A", f"LLMGRADE-CANARY-{token}-B"],
                   marker=f"hxmark-{token}")
    for path in run.other_course.rglob("*"):   # world-readable, as a checkout elsewhere would be
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    shared = Path("/tmp") / f"{run.marker}-shared"   # a world-writable folder inside /tmp (/tmp/.X11-unix)
    shared.mkdir()
    os.chmod(shared, 0o1777)
    (base / "stage").mkdir()
    batches = plan(level)
    make_submissions(run, {sid: i for i, ids in enumerate(batches) for sid in ids})
    run.batches = [Batch(ids, base / f"out{i}") for i, ids in enumerate(batches)]
    if level == "user":
        (base / "home").mkdir()
        for path in [base, *base.rglob("*")]:
            os.lchown(path, USER_UID, USER_UID)
    nets = [cgroup_safety_net(f"llmgrade-hostile-{token}-{i}") for i in range(len(batches))]
    pool_before = set(pool_processes())
    files_before = set(files_of_pool(set()))
    run.shm_before = sysv_shm()
    try:
        _, run.doctor = execute(run, [*llmgrade(), "doctor"], nets[0], 60)
        def grade(i: int, batch: Batch) -> None:
            t0 = time.monotonic()
            batch.returncode, batch.output = execute(
                run, [*llmgrade(), "grade-all", str(base / f"subs{i}"), "--out", str(batch.out),
                      "--workers", "2", "--stage", "bigram"], nets[i], BATCH_TIMEOUT)
            batch.seconds = time.monotonic() - t0

        grade(0, run.batches[0])
        # the user level's small batches side by side, but the one that kills every grading
        # process of its uid (the user level's: all of them) on its own, last
        killer = [i for i, b in enumerate(run.batches) if "r07_kill_grader" in b.ids and i]
        threads = [threading.Thread(target=grade, args=(i, b)) for i, b in enumerate(run.batches)
                   if i and i not in killer]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for i in killer:
            grade(i, run.batches[i])
        time.sleep(4)   # a daemon that outlived the batch would rewrite its results.json by now
        for i, net in enumerate(nets):
            found = {pid: name for pid, name in pool_processes().items() if pid not in pool_before and
                     (pid in cgroup_pids(net) or (i == 0 and name.startswith("hx-")))}
            found.update({pid: _status(str(pid)).get("Name", "?") for pid in cgroup_pids(net)})
            run.leftover_processes += [Leftover(i, pid, name, _uid(pid), _cmdline(pid))
                                       for pid, name in sorted(found.items())]
        run.leftover_files = sorted(set(files_of_pool(files_before)) | set(files_marked(run.marker)))
        run.shm_after = sysv_shm()
        run.planted = [p for p in run.plants if os.path.exists(p)]
    finally:
        ours = set().union(*(cgroup_pids(net) for net in nets))
        for pid, name in pool_processes().items():   # only what appeared during the batch and is ours
            if pid not in pool_before and (pid in ours or name.startswith("hx-")):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for net in nets:
            kill_started(0, net)
            for folder in net or []:
                cgroups.remove_tree(folder)   # with the grading's worker groups nested in it
        scratch.sweep()   # the scratch roots of the grading processes a route killed outright
        remove_marked(run.marker)
        for batch in run.batches:   # where the grader put results it could not write (route 9)
            for path in re.findall(r"written to (/tmp/llmgrade-results-\S+?\.json)", batch.output):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        shutil.rmtree(shared, ignore_errors=True)
        _remove_own_shm(run)
        for path in run.plants:
            try:
                os.unlink(path)
            except OSError:
                pass
        shutil.rmtree(other_root, ignore_errors=True)
        run.seconds = time.monotonic() - started
    return run


def _remove_own_shm(run: LevelRun) -> None:
    """A SysV segment the routes made (key 0x4858) that is new since the start: removed."""
    before = set(run.shm_before.splitlines())
    for line in sysv_shm().splitlines():
        fields = line.split()
        if line not in before and fields and int(fields[0]) == 0x4858:
            subprocess.run(["ipcrm", "-m", fields[1]], capture_output=True)


def isolation_level(doctor_output: str) -> str:
    match = re.search(r"isolation level:\s*(\w+)", doctor_output)
    return match[1] if match else ""
