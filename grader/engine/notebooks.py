"""Turn a stage notebook into its module: the cells marked for export, in order.

A code cell is exported when its first line is `#| export` or when it carries
the cell tag `export` (see the contract, "A submission"). Nothing is executed.

The grading process may run as root, so the file is opened with O_NOFOLLOW (a
notebook that is a symbolic link to /etc/shadow or to the course's solutions
is refused, never read), and no error message quotes the file: a parse error
names a line and column, a format error the path inside the notebook at most
(nbformat's and json's own messages can quote what they failed on).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path

import nbformat

_EXPORT = re.compile(r"^\s*#\s*\|\s*export\s*$")
MAX_NOTEBOOK_BYTES = 50 * 2**20


class NotebookError(ValueError):
    """The notebook cannot be read or exports nothing; the message is for the student."""


def symlink_message(name: str) -> str:
    return f"{name} is a symbolic link; submit the file itself"


def export_module(path: Path) -> str:
    path = Path(path)
    notebook = read_notebook(path)
    parts = []
    for number, cell in enumerate(notebook.cells, start=1):
        if cell.cell_type != "code":
            continue
        source = cell.source
        first_line = source.split("\n", 1)[0]
        if _EXPORT.match(first_line) or "export" in cell.metadata.get("tags", []):
            parts.append(f"# --- {path.name}, cell {number} ---\n{source.rstrip()}\n")
    if not parts:
        raise NotebookError(f"{path.name} has no code cell marked '#| export' (or tagged 'export')")
    return "\n\n".join(parts)


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """The notebook at `path` as nbformat 4, validated; NotebookError (quoting nothing) otherwise."""
    path = Path(path)
    return parse_notebook(_read_bytes(path), path.name)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, opened without following a symbolic link (nor blocking on a FIFO)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise NotebookError(symlink_message(path.name)) from None
        raise NotebookError(f"{path.name} could not be opened ({os.strerror(exc.errno or 0)})") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise NotebookError(f"{path.name} is not a regular file")
        data = file.read(MAX_NOTEBOOK_BYTES + 1)
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise NotebookError(f"{path.name} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB "
                            f"(clear the cells' outputs)")
    return data


def parse_notebook(data: bytes, name: str) -> nbformat.NotebookNode:
    """Parse and validate notebook bytes. Messages give a position or a path, never file text."""
    invalid = f"{name} is not a valid Jupyter notebook"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotebookError(f"{invalid} (not UTF-8 text: byte {exc.start})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:   # its msg may quote an escape; the position is enough
        raise NotebookError(f"{invalid} (not valid JSON: line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError):
        raise NotebookError(f"{invalid} (not valid JSON)") from None
    if not isinstance(raw, dict):
        raise NotebookError(f"{invalid} (the JSON is not an object)")
    major = raw.get("nbformat")
    if not isinstance(major, int) or isinstance(major, bool) or major not in nbformat.versions:
        shown = f" {major}" if isinstance(major, int) and not isinstance(major, bool) else ""
        raise NotebookError(f"{invalid} (unsupported or missing nbformat version{shown})")
    try:
        notebook = nbformat.reader.reads(text)   # parses again: the JSON is known to be valid
        notebook = nbformat.convert(notebook, 4)
        nbformat.validate(notebook)
    except nbformat.ValidationError as exc:
        where = "/".join(str(part)[:40] for part in getattr(exc, "absolute_path", ()) or ())[:200]
        raise NotebookError(f"{invalid} (it does not follow the notebook format"
                            f"{f' at {where}' if where else ''})") from None
    except Exception:  # noqa: BLE001 -- nbformat raises several unrelated types, quoting the file
        raise NotebookError(f"{invalid} (its structure is not one nbformat can read)") from None
    return notebook
