"""`llmgrade release`: build the student bundle (no solutions, no hidden tests)."""

from __future__ import annotations

from pathlib import Path

import click

from grader.commands.common import console, stage_option
from grader.course import release


@click.command("release")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@stage_option("Release only this stage (repeatable). Default: every stage.")
def command(out_dir: Path, stage_names: tuple[str, ...]) -> None:
    """Build the student bundle in OUT_DIR (a new or empty folder).

    The bundle holds the skeletons, notebooks, handouts, public tests,
    datasets and the grader's framework, so students can `pip install -e .`
    and run `llmgrade check`; never the solutions, the hidden tests or the
    hidden data.

    Example: llmgrade release dist/student --stage tokenizer --stage bigram
    """
    try:
        files = release.build(out_dir, stage_names)
    except release.ReleaseError as exc:
        raise click.BadParameter(str(exc), param_hint="OUT_DIR") from None
    console.print(f"student bundle written to {out_dir} ({len(files)} files)")
