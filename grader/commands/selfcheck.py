"""`llmgrade selfcheck`: the references score full marks, the skeletons zero, no hidden test crashes."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from grader import stages
from grader.commands.common import DEVICE, console, stage_option
from grader.grade import GradeOptions, grade
from grader.results import grader_errors, stage_scores


@click.command("selfcheck")
@stage_option("Check only this stage (repeatable).")
@DEVICE
def command(stage_names: tuple[str, ...], device: str) -> None:
    """Prove the hidden tests: the references score full marks, the skeletons zero.

    Example: llmgrade selfcheck --stage bigram
    """
    root = stages.project_root()
    options = GradeOptions(stage_names=list(stage_names), device=device)
    reference_results = grade(root / "solutions", options)
    skeleton_results = grade(root / "assignments", options)
    reference, skeleton = stage_scores(reference_results), stage_scores(skeleton_results)
    broken = grader_errors(reference_results) + grader_errors(skeleton_results)
    table = Table("stage", "reference", "skeleton", "verdict", title="selfcheck")
    failed = False
    for name, (score, maximum) in reference.items():
        skel = skeleton.get(name, (0.0, maximum))[0]
        stage_broken = any(test.startswith(f"{name}: ") for test in broken)
        ok = maximum > 0 and score == maximum and skel == 0 and not stage_broken
        failed |= not ok
        table.add_row(name, f"{score:g} / {maximum:g}", f"{skel:g} / {maximum:g}",
                      "[green]ok[/]" if ok else "[red]FAILED[/]" + (" (grader error)" if stage_broken else ""))
    console.print(table)
    for test in dict.fromkeys(broken):
        console.print(f"[red]grader error[/] in {escape(test)}")
    if failed:
        raise click.ClickException("selfcheck failed: a reference lost points, a skeleton scored, "
                                   "or a hidden test crashed")
