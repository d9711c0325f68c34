"""Grade a folder of submissions in parallel: one results.json and feedback.html each, a gradebook.

    rows = grade_all(Path("submissions"), Path("graded"), BatchOptions(workers=2, stage_names=["bigram"]))

SUBMISSIONS_DIR holds one sub-folder or zip per student, named by student id
(`ada/`, `bob.zip` -> `bob`); other entries and hidden ones are ignored. Ids are
sorted; `--shard I/N` (1-based) takes ids[I-1::N], a deterministic slice.

N grading processes (multiprocessing "spawn": a fresh interpreter, never a fork
of this one) each grade many submissions in turn with `grader.engine.grade.grade`, so
each pays for Python, torch and its worker template once; every test of every
submission still runs in a fresh worker forked from that template. A grading
process that dies or overruns `submission_timeout` is killed with its process
group and replaced; its submission becomes a results.json with no tests and an
`extra_data.llmgrade_error`, i.e. one gradebook row with its error, and is graded
again on the next run. A results.json is skipped (unless `force`) only when it is
valid, has no such error and records the same grading key: the same submission
content, hidden tests and grader, and the chosen stages (grader/engine/fingerprint.py);
otherwise the submission is graded again and its Outcome says why.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Callable


from grader import scratch
from grader.course import stages
from grader.engine import fingerprint, results_json

ERROR_KEY = "llmgrade_error"          # extra_data key of a submission the batch could not grade
DEFAULT_SUBMISSION_TIMEOUT = 1800.0   # seconds for one whole submission, the backstop


@dataclass
class BatchOptions:
    stage_names: list[str] = field(default_factory=list)   # empty: every stage
    device: str = "auto"
    call_timeout: float = 10.0
    workers: int = 1
    shard: tuple[int, int] = (1, 1)                          # (I, N), 1-based
    force: bool = False
    submission_timeout: float = DEFAULT_SUBMISSION_TIMEOUT
    isolation: str = "auto"


@dataclass
class Outcome:
    """What happened to one submission in this run."""
    id: str
    status: str            # graded | skipped | error | interrupted
    error: str = ""
    seconds: float = 0.0
    regraded: str = ""     # why an earlier results.json was not kept, when there was one


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt (see `on_sigterm`)."""


def on_sigterm(signum, frame) -> None:
    raise Terminated("SIGTERM")


class Interrupted(Exception):
    """The batch was stopped by SIGINT or SIGTERM: the grading processes are killed, what
    finished is kept; `outcomes` has every id, the unfinished ones "interrupted"."""

    def __init__(self, outcomes: list[Outcome], signal_name: str):
        super().__init__(f"interrupted by {signal_name}")
        self.outcomes, self.signal_name = outcomes, signal_name


# ---------------------------------------------------------------- finding the work

def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4); anything else is a ValueError with a one-line reason."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes I/N with whole numbers, e.g. 1/4 (got {text!r})") from None
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"--shard I/N needs 1 <= I <= N (got {text!r}); shards are numbered from 1")
    return i, n


def find_submissions(folder: Path) -> dict[str, list[Path]]:
    """{student id: [paths]} for every sub-folder and zip of `folder`, sorted by id.

    More than one path for an id (`bob/` and `bob.zip`) is reported by the caller as an error row.
    """
    found: dict[str, list[Path]] = {}
    for entry in sorted(Path(folder).iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_dir():
            found.setdefault(entry.name, []).append(entry)
        elif entry.is_file() and entry.suffix.lower() == ".zip":
            found.setdefault(entry.stem, []).append(entry)
    return dict(sorted(found.items()))


def take_shard(ids: list[str], shard: tuple[int, int]) -> list[str]:
    i, n = shard
    return sorted(ids)[i - 1::n]


def results_path(out: Path, sid: str) -> Path:
    return Path(out) / sid / "results.json"


def load_results(path: Path) -> dict | None:
    """The results.json at `path` if it is readable and follows the schema, else None."""
    import jsonschema

    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
        results_json.validate(results)
        return results
    except (OSError, ValueError, jsonschema.ValidationError):
        return None


def batch_error(results: dict) -> str:
    return str((results.get("extra_data") or {}).get(ERROR_KEY) or "")


def why_regrade(out: Path, sid: str, key: dict) -> str | None:
    """None when DIR/<id>/results.json is still valid for `key`; "" when there is none to keep
    (never graded, unreadable, or a batch error row); otherwise the reason it is stale."""
    results = load_results(results_path(out, sid))
    if results is None or batch_error(results):
        return ""
    return fingerprint.why_stale(results, key)


# ---------------------------------------------------------------- writing one submission's files

def error_results(message: str, detail: str = "") -> dict:
    """A schema-valid results.json for a submission the batch could not grade."""
    results = {"score": 0, "execution_time": 0, "output": f"grading failed: {message}",
               "output_format": "text", "visibility": "visible", "stdout_visibility": "hidden",
               "tests": [], "leaderboard": [], "extra_data": {ERROR_KEY: message}}
    if detail:
        results["extra_data"]["llmgrade_traceback"] = detail
    results_json.validate(results)
    return results


def write_outputs(out: Path, sid: str, results: dict) -> str:
    """DIR/<id>/results.json and DIR/<id>/feedback.html; '' or what went wrong (and where the
    results went instead), so that a path that cannot be written costs no grade."""
    from grader.workflows.feedback_html import render

    folder = Path(out) / sid
    try:
        results_json.write(results, folder / "results.json")
        (folder / "feedback.html").write_text(render(results, title=f"Feedback for {sid}"), encoding="utf-8")
    except OSError as exc:
        return str(exc)
    return ""


# ---------------------------------------------------------------- the grading processes

def _serve(conn, config: dict) -> None:
    """A grading process: grade each (id, path) it is sent, write its files, answer a summary."""
    os.setsid()   # its own process group, so a kill takes the worker template along
    from grader.worker import libc

    # Dies with the batch, however the batch ends (SIGKILL included); its worker template dies
    # with it in turn. A batch already gone shows as another parent.
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != config["parent"]:
        os._exit(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    import torch

    from grader.engine.grade import GradeOptions, grade

    torch.set_num_threads(config["threads"])
    options = GradeOptions(stage_names=config["stage_names"], device=config["device"],
                           call_timeout=config["call_timeout"], hidden_paths=config["hidden_paths"],
                           protect_paths=config["hidden_paths"], isolation=config["isolation"])
    out = Path(config["out"])
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        sid, path, key = task
        started = time.monotonic()
        try:
            results = grade(Path(path), options)
            results.setdefault("extra_data", {})[fingerprint.KEY] = key
            error = ""
        except Exception as exc:  # noqa: BLE001 -- the row records it; the batch goes on
            error = f"{type(exc).__name__}: {exc}"
            results = error_results(error, traceback.format_exc())
        error = write_outputs(out, sid, results) or error
        conn.send({"id": sid, "error": error, "seconds": time.monotonic() - started})


class _Slot:
    """One grading process and the submission it is on."""

    def __init__(self, context, config: dict):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, config), daemon=False)
        self.process.start()
        child.close()
        self.task: tuple[str, str, dict] | None = None
        self.started = 0.0

    def send(self, task: tuple[str, str, dict]) -> None:
        self.conn.send(task)
        self.task, self.started = task, time.monotonic()

    def kill(self) -> None:
        try:   # its group (the worker template and workers), once it has made one
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(30)
        if self.process.is_alive():
            self.kill()
        else:
            try:   # the template and any stray worker of its group
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def grade_all(submissions_dir: Path, out: Path, options: BatchOptions,
              progress: Callable[[Outcome], None] | None = None,
              on_start: Callable[[int, int], None] | None = None,
              on_begin: Callable[[str], None] | None = None) -> list[Outcome]:
    """Grade this shard of `submissions_dir` into `out`; one Outcome per id, sorted by id.

    `on_start(to_report, skipped)` is called once the work is known; `progress(outcome)` after each
    id that is not skipped (`to_report` of them); `on_begin(id)` when a grading process takes an id.
    """
    from grader.worker.layers import protect_grading_process

    protect_grading_process()   # no worker may read or write the batch's memory either
    submissions_dir, out = Path(submissions_dir).resolve(), Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    found = find_submissions(submissions_dir)
    ids = take_shard(list(found), options.shard)
    chosen = stages.select(options.stage_names)
    tests_hash = fingerprint.tests_hash(chosen)   # once: the same for every submission
    outcomes: dict[str, Outcome] = {}
    reasons: dict[str, str] = {}
    todo: list[tuple[str, str, dict]] = []
    for sid in ids:
        paths = found[sid]
        if len(paths) > 1:
            names = " and ".join(p.name + ("/" if p.is_dir() else "") for p in paths)
            message = f"two submissions for {sid}: {names}; keep one"
            write_outputs(out, sid, error_results(message))
            outcomes[sid] = Outcome(sid, "error", message)
            continue
        key = {"submission": fingerprint.submission_hash(paths[0]), "tests": tests_hash,
               "stages": sorted(s.name for s in chosen)}
        reason = "" if options.force else why_regrade(out, sid, key)
        if reason is None:
            if not (out / sid / "feedback.html").exists():
                write_outputs(out, sid, load_results(results_path(out, sid)))
            outcomes[sid] = Outcome(sid, "skipped")
        else:
            reasons[sid] = reason
            todo.append((sid, str(paths[0]), key))
    if on_start:
        errors = sum(o.status == "error" for o in outcomes.values())
        on_start(len(todo) + errors, len(outcomes) - errors)
    for outcome in list(outcomes.values()):
        if progress and outcome.status == "error":
            progress(outcome)
    runner = _run(todo, out, submissions_dir, options, on_begin)
    try:
        for outcome in runner:
            outcome.regraded = reasons.get(outcome.id, "")
            outcomes[outcome.id] = outcome
            if progress:
                progress(outcome)
    except KeyboardInterrupt as exc:   # Ctrl-C, or SIGTERM through on_sigterm
        runner.close()                 # kills the grading processes, if the interrupt came outside _run
        for sid, _, _ in todo:
            outcomes.setdefault(sid, Outcome(sid, "interrupted", "not graded: the batch was interrupted"))
        raise Interrupted([outcomes[sid] for sid in sorted(outcomes)],
                          "SIGTERM" if isinstance(exc, Terminated) else "SIGINT") from None
    return [outcomes[sid] for sid in sorted(outcomes)]


def _run(todo: list[tuple[str, str, dict]], out: Path, submissions_dir: Path, options: BatchOptions,
         on_begin: Callable[[str], None] | None = None):
    """Yield an Outcome per task as the grading processes finish them."""
    if not todo:
        return
    workers = max(1, min(options.workers, len(todo)))
    config = {"stage_names": list(options.stage_names), "device": options.device, "parent": os.getpid(),
              "call_timeout": options.call_timeout, "out": str(out),
              "hidden_paths": [str(out), str(submissions_dir)], "isolation": options.isolation,
              "threads": max(1, (os.cpu_count() or 1) // workers)}
    context = multiprocessing.get_context("spawn")
    queue = list(reversed(todo))
    slots: list[_Slot] = []
    try:
        slots += [_Slot(context, config) for _ in range(workers)]
        while True:
            for index, slot in enumerate(slots):
                if slot.task is None and queue:
                    if not slot.process.is_alive():   # killed or died: a fresh one
                        slot = slots[index] = _Slot(context, config)
                    try:
                        slot.send(queue[-1])
                    except OSError:   # it died while idle: replace it, the task stays queued
                        slot.kill()
                        slots[index] = _Slot(context, config)
                        continue
                    if on_begin:
                        on_begin(queue[-1][0])
                    queue.pop()
            busy = [s for s in slots if s.task is not None]
            if not busy:
                if not queue:
                    break
                continue
            ready = wait([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout=1.0)
            for slot in slots:
                if slot.task is None:
                    continue
                sid = slot.task[0]
                outcome = None
                if slot.conn in ready:
                    try:
                        reply = slot.conn.recv()
                        outcome = Outcome(sid, "error" if reply["error"] else "graded", reply["error"],
                                          reply["seconds"])
                    except (EOFError, OSError):
                        pass
                if outcome is None and not slot.process.is_alive():
                    code = slot.process.exitcode
                    outcome = _failed(out, sid, f"the grading process ended (exit code {code}) while "
                                                f"grading this submission", slot)
                elif outcome is None and time.monotonic() - slot.started > options.submission_timeout:
                    outcome = _failed(out, sid, f"grading took longer than {options.submission_timeout:g} s "
                                                f"and was stopped", slot)
                if outcome is None:
                    continue
                slot.task = None   # a dead slot is replaced when it is next needed
                yield outcome
    except BaseException:   # interrupted (or closed early): stop now, not after the submissions in flight
        for slot in slots:
            slot.kill()
        scratch.sweep()   # the killed grading processes' temporary folders
        raise
    for slot in slots:
        slot.stop()
    scratch.sweep()       # those of any grading process killed on the way (a timeout, a crash)


def _failed(out: Path, sid: str, message: str, slot: _Slot) -> Outcome:
    seconds = time.monotonic() - slot.started
    slot.kill()
    message = write_outputs(out, sid, error_results(message)) or message
    return Outcome(sid, "error", message, seconds)
