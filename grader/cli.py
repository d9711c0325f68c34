"""The `llmgrade` command line: one click command per function.

Errors are one line and a non-zero exit; set LLMGRADE_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from grader import stages
from grader.grade import GradeOptions, grade
from grader.results import grader_errors, stage_scores, write

console = Console(highlight=False)
FEEDBACK_LINES = 8  # per failed test in the terminal; results.json has it all

DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                      show_default=True, help="Run numeric tests on these devices (auto: CPU, and CUDA when present).")


def _known_stages(ctx, param, names):
    try:
        stages.select(list(names))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return names


def _stage_option(help_text: str):
    return click.option("--stage", "stage_names", multiple=True, metavar="STAGE", help=help_text,
                        callback=_known_stages)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmgrade")
def cli() -> None:
    """Grade the stages of the GPT course: hidden tests, run safely, Gradescope results."""


@cli.command("grade")
@click.argument("submission", type=click.Path(exists=True, path_type=Path))
@_stage_option("Grade only this stage (repeatable). Default: every stage.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("results.json"),
              show_default=True, help="Where to write Gradescope's results.json.")
@DEVICE
@click.option("--timeout", "call_timeout", type=float, default=10.0, show_default=True,
              help="Seconds each call into the submission may take.")
def grade_command(submission: Path, stage_names: tuple[str, ...], out: Path, device: str,
                  call_timeout: float) -> None:
    """Grade one SUBMISSION (a folder, a .zip or notebooks) with the hidden tests.

    Writes results.json in Gradescope's schema and prints a summary. Exits 0
    whenever grading completed, whatever the score.

    Example: llmgrade grade submissions/ada.zip --stage bigram --out ada.json
    """
    options = GradeOptions(stage_names=list(stage_names), device=device, call_timeout=call_timeout,
                           hidden_paths=[str(out.resolve().parent)])
    results = grade(submission, options)
    write(results, out)
    show_results(results)
    console.print(f"results written to {out}")


@cli.command("check")
@click.argument("stage_names", nargs=-1, metavar="[STAGE]...", callback=_known_stages)
@click.option("--path", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Your working copy (the folder with bigram.py, ...).")
@DEVICE
def check_command(stage_names: tuple[str, ...], path: Path, device: str) -> None:
    """Run the public tests of STAGE (default: every stage) on your working copy.

    Example: llmgrade check bigram --path ~/llm-course
    """
    results = grade(path, GradeOptions(stage_names=list(stage_names), device=device, tests="public"))
    show_results(results)


@cli.command("selfcheck")
@_stage_option("Check only this stage (repeatable).")
@DEVICE
def selfcheck_command(stage_names: tuple[str, ...], device: str) -> None:
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


def show_results(results: dict) -> None:
    table = Table("stage", "score", title="llmgrade")
    for name, (score, maximum) in stage_scores(results).items():
        table.add_row(name, f"{score:g} / {maximum:g}")
    console.print(table)
    if results.get("output") and results["output"] != "Graded.":
        console.print(results["output"])
    for test in results["tests"]:
        if test["status"] == "failed":
            lines = test["output"].splitlines() or [""]
            shown = lines[:FEEDBACK_LINES] + (["..."] if len(lines) > FEEDBACK_LINES else [])
            console.print(f"[red]✗[/] {escape(test['name'])}: {escape(shown[0])}", soft_wrap=True)
            for line in shown[1:]:
                console.print(f"    {escape(line)}", soft_wrap=True)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 -- one line, never a traceback
        if os.environ.get("LLMGRADE_DEBUG"):
            raise
        click.echo(f"Error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(2)
