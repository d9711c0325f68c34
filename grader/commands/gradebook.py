"""`llmgrade gradebook`: merge the results of grade-all runs (shards) into one gradebook.csv."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from grader.commands.common import console
from grader.workflows import gradebook


@click.command("gradebook")
@click.argument("folders", nargs=-1, required=True, metavar="DIR...",
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("gradebook.csv"),
              show_default=True, help="The merged gradebook.")
def command(folders: tuple[Path, ...], out: Path) -> None:
    """Merge DIR/<id>/results.json of one or more grade-all output folders into one gradebook.

    One row per id; an id graded in two folders keeps its newer results.json
    (with a warning). The partial gradebook CSVs of the shards are not read.

    Example: llmgrade gradebook graded/ --out graded/gradebook.csv
    """
    rows, warnings = gradebook.collect(list(folders))
    if not rows:
        raise click.ClickException(f"no <id>/results.json found in {', '.join(map(str, folders))}")
    for warning in warnings:
        console.print(f"[yellow]warning[/]: {escape(warning)}")
    gradebook.write(rows, out)
    errors = sum(bool(row.error) for row in rows)
    console.print(f"{len(rows)} students ({errors} with an error) written to {out}")
