"""Length-prefixed frames over a pipe, read with a deadline.

The grader never blocks on the worker: a worker that writes half a frame and
then hangs is indistinguishable from one that never answers, and both end at
the deadline.
"""

from __future__ import annotations

import os
import select
import struct
import time

_LENGTH = struct.Struct("<Q")


class FrameTimeout(Exception):
    """No complete frame arrived before the deadline."""


class FrameClosed(Exception):
    """The other end closed the pipe (usually: the process died)."""


class FrameTooLarge(Exception):
    """The other end announced a frame larger than the cap."""


def write_frame(fd: int, payload: bytes) -> None:
    data = memoryview(_LENGTH.pack(len(payload)) + payload)
    while data:
        written = os.write(fd, data)
        data = data[written:]


def read_frame(fd: int, *, deadline: float | None = None, max_bytes: int,
               on_wait=None) -> bytes:
    """Read one frame; `on_wait()` runs every 50 ms while waiting (a watchdog)."""
    (length,) = _LENGTH.unpack(_read_exact(fd, _LENGTH.size, deadline, on_wait))
    if length > max_bytes:
        raise FrameTooLarge(f"{length} bytes announced, limit {max_bytes}")
    return _read_exact(fd, length, deadline, on_wait)


def _read_exact(fd: int, n: int, deadline: float | None, on_wait) -> bytes:
    chunks, remaining = [], n
    while remaining:
        wait = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
        if wait <= 0:
            raise FrameTimeout()
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            if on_wait is not None:
                on_wait()
            continue
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise FrameClosed()
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
