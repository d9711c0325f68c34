"""`llmgrade new-stage NAME`: scaffold every file of a new stage (grader/course/scaffold.py), then sync."""

from __future__ import annotations

import click

from grader.commands.common import console


@click.command("new-stage")
@click.argument("name")
@click.option("--title", default=None, help="The handout's title (default: NAME, capitalised).")
def command(name: str, title: str | None) -> None:
    """Scaffold stage NAME: handout, reference with solution markers, hidden and public tests,
    corpus folders; then generate its skeleton and notebook and the README's stage table.

    The new stage grades as it stands (a toy function): `llmgrade selfcheck --stage NAME`.

    Example: llmgrade new-stage rope --title "Rotary position embeddings"
    """
    from grader.course.scaffold import new_stage
    from grader.course.sync import sync

    for path in new_stage(name, title=title):
        console.print(f"wrote {path}")
    for path in sync():
        console.print(f"generated {path}")
    console.print(f"next: edit the handout and solutions/{name}.py, then `llmgrade sync` and "
                  f"`llmgrade selfcheck --stage {name}`")
