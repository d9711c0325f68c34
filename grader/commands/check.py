"""`llmgrade check`: a student runs the public tests on their working copy."""

from __future__ import annotations

from pathlib import Path

import click

from grader.commands.common import DEVICE, known_stages, show_results
from grader.grade import GradeOptions, grade


@click.command("check")
@click.argument("stage_names", nargs=-1, metavar="[STAGE]...", callback=known_stages)
@click.option("--path", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Your working copy (the folder with bigram.py, ...).")
@DEVICE
def command(stage_names: tuple[str, ...], path: Path, device: str) -> None:
    """Run the public tests of STAGE (default: every stage) on your working copy.

    Example: llmgrade check bigram --path ~/llm-course
    """
    results = grade(path, GradeOptions(stage_names=list(stage_names), device=device, tests="public"))
    show_results(results)
