"""`llmgrade sync`: regenerate the skeletons, notebooks and the README's stage table (grader/course/sync.py)."""

from __future__ import annotations

import click

from grader.commands.common import console


@click.command("sync")
def command() -> None:
    """Regenerate what comes from the references and handouts: the skeletons
    (assignments/<stage>.py), the notebooks and README.md's stage table.

    Example: llmgrade sync
    """
    from grader.course.sync import sync

    changed = sync()
    for path in changed:
        console.print(f"generated {path}")
    if not changed:
        console.print("everything generated is up to date")
