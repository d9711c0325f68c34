"""`llmgrade submit`: a student validates their working copy and packs it into the submission zip."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from grader.commands.common import console
from grader.course import stages


@click.command("submit")
@click.option("--path", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Your working copy (the folder with bigram.py, ... or the notebooks).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("submission.zip"),
              show_default=True, help="The zip to write.")
@click.option("--force", is_flag=True, help="Write the zip even when a module has problems.")
def command(path: Path, out: Path, force: bool) -> None:
    """Validate your stage modules (and notebooks) and pack them into a submission zip.

    Nothing is graded: each stage module must import, use no banned API of its
    stage, and each notebook must be valid and export its '#| export' cells.
    Missing stages are warnings. The zip holds only what is graded: the stage
    modules or notebooks and the helper modules they import. With problems,
    nothing is written (unless --force) and the exit code is 1.

    Example: llmgrade submit --path ~/llm-course --out submission.zip
    """
    from grader.workflows import submission_zip

    if out.suffix.lower() != ".zip":
        raise click.BadParameter(f"{out} does not end in .zip", param_hint="'--out'")
    names = [s.name for s in stages.discover()]
    found = submission_zip.working_copy(path, names)
    if found is None:
        raise click.ClickException(
            f"no stage module in {path} (expected {names[0]}.py, {names[1]}.py, ... or their .ipynb); "
            "run it in your working copy or pass --path")
    if found != path:
        console.print(f"your stage modules are in {escape(str(found))}: checking and packing those")
        path = found
    with console.status("checking your modules (each is imported in a sandbox)..."):
        report = submission_zip.validate(path)
    table = Table("stage", "file", "status", title="llmgrade submit")
    for entry in report.modules:
        status = ("[yellow]missing[/]" if not entry.file else
                  "[red]problem[/]" if entry.problems else
                  "[yellow]not started[/]" if entry.unfinished and len(entry.unfinished) == entry.defined else
                  f"[yellow]{len(entry.unfinished)} of {entry.defined} functions left[/]" if entry.unfinished else
                  "[green]ok[/]")
        table.add_row(entry.stage, escape(entry.file or "-"), status)
    console.print(table)
    for entry in report.modules:
        for problem in entry.problems:
            lines = problem.splitlines()
            console.print(f"[red]✗[/] {escape(entry.stage)}: {escape(lines[0])}", soft_wrap=True)
            for line in lines[1:]:
                console.print(f"    {escape(line)}", soft_wrap=True)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    if report.problems and not force:
        raise click.ClickException(f"{len(report.problems)} problem(s) above; nothing was written "
                                   "(fix them, or pass --force to pack anyway)")
    try:
        written = submission_zip.pack(report, out)
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"could not write {out}: {exc}") from None
    console.print(f"wrote {escape(str(out))}: {escape(', '.join(written))}", soft_wrap=True)
    if report.problems:
        console.print("[yellow]warning:[/] packed despite the problems above (--force)")
