"""`llmgrade selfcheck`: the references score full marks, the skeletons zero, no hidden test crashes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import click
from rich.markup import escape
from rich.table import Table

from grader.commands.common import DEVICE, ISOLATION, console, stage_option
from grader.course import stages
from grader.engine.results_json import GRADER_ERROR, grader_errors, stage_scores


@click.command("selfcheck")
@stage_option("Check only this stage (repeatable).")
@DEVICE
@ISOLATION
def command(stage_names: tuple[str, ...], device: str, isolation: str) -> None:
    """Prove the hidden tests: the references score full marks, the skeletons zero.

    Example: llmgrade selfcheck --stage bigram
    """
    from grader.engine.grade import GradeOptions, grade

    from grader.commands.doctor import print_isolation

    print_isolation()
    root = stages.project_root()
    from grader.worker.layers import IsolationError

    from grader.engine.checks import PROVE_TOLERANCES
    os.environ[PROVE_TOLERANCES] = "1"   # the hidden tests also prove their widened tolerances
    options = GradeOptions(stage_names=list(stage_names), device=device, isolation=isolation)
    try:
        reference_results = grade(root / "solutions", options)
        skeleton_results = grade(root / "assignments", options)
    except IsolationError as exc:
        raise click.ClickException(str(exc)) from None
    table = Table("stage", "reference", "skeleton", "verdict", title="selfcheck")
    rows = verdicts(reference_results, skeleton_results)
    for row in rows:
        table.add_row(row.stage, f"{row.reference:g} / {row.maximum:g}", f"{row.skeleton:g} / {row.maximum:g}",
                      "[green]ok[/]" if row.ok else "[red]FAILED[/]" + (" (grader error)" if row.crashed else ""))
    console.print(table)
    for test in dict.fromkeys(grader_errors(reference_results) + grader_errors(skeleton_results)):
        console.print(f"[red]grader error[/] in {escape(test)}")
    if not all(row.ok for row in rows):
        raise click.ClickException("selfcheck failed: a reference lost points, a skeleton scored, "
                                   "or a hidden test crashed")


@dataclass
class StageVerdict:
    stage: str
    reference: float
    skeleton: float
    maximum: float
    crashed: bool          # a hidden test of the stage raised a grader error in either run

    @property
    def ok(self) -> bool:
        return self.maximum > 0 and self.reference == self.maximum and self.skeleton == 0 and not self.crashed


def verdicts(reference_results: dict, skeleton_results: dict) -> list[StageVerdict]:
    """One verdict per stage: the reference has full marks, the skeleton zero, no hidden test crashed."""
    skeleton = stage_scores(skeleton_results)
    crashed = {test["tags"][0] for results in (reference_results, skeleton_results)
               for test in results["tests"] if GRADER_ERROR in test.get("tags", ())}
    return [StageVerdict(name, score, skeleton.get(name, (0.0, maximum))[0], maximum, name in crashed)
            for name, (score, maximum) in stage_scores(reference_results).items()]
