"""Turn a stage notebook into its module: the cells marked for export, in order.

A code cell is exported when its first line is `#| export` or when it carries
the cell tag `export` (see the contract, "A submission"). Nothing is executed.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

_EXPORT = re.compile(r"^\s*#\s*\|\s*export\s*$")


class NotebookError(ValueError):
    """The notebook cannot be read or exports nothing; the message is for the student."""


def export_module(path: Path) -> str:
    try:
        notebook = nbformat.read(str(path), as_version=4)
        nbformat.validate(notebook)
    except Exception as exc:  # nbformat raises several unrelated types for a broken file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotebookError(f"{path.name} is not a valid Jupyter notebook ({reason[:200]})") from None
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
