"""How many workers a grading process keeps alive at once.

A worker holds tens of MB of its own: the template's pages it wrote to, the submission's
objects. Grading opens one `WorkerSession` per stage and keeps it to the end of the run,
so without a cap all 8 stages' workers were alive at once: 1.1 GB for the reference, over
Gradescope's 768 MB container (benchmarks/bench_container.py). The stages run one after
another, so when a session starts a worker, the least recently used idle workers of other
sessions are closed; a closed session starts a fresh worker if it is asked again, as after
a crash (a handle from the closed worker is reported as lost). 2, not 1: two sessions may
be used side by side (tests do).
"""

from __future__ import annotations

import threading

MAX_LIVE_WORKERS = 2

_live: list = []   # WorkerSessions with a live worker, least recently used first
_lock = threading.Lock()


def touch(session) -> None:
    """`session` (which has a live worker) was just used."""
    with _lock:
        if session in _live:
            _live.remove(session)
        _live.append(session)


def forget(session) -> None:
    """`session`'s worker is gone."""
    with _lock:
        if session in _live:
            _live.remove(session)


def make_room(starting) -> None:
    """Close the least recently used idle workers until `starting` may start one."""
    from grader.worker.client import WorkerFailure

    with _lock:
        idle = [s for s in _live if s is not starting and not s.busy]
        evict = idle[:max(0, len(_live) - (MAX_LIVE_WORKERS - 1))]
    for session in evict:
        try:
            session.discard()
        except WorkerFailure:   # processes that outlived SIGKILL: its owner's close() says so again
            pass
