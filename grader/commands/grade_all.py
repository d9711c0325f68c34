"""`llmgrade grade-all`: every submission of a folder, in parallel, into results, feedback pages and a gradebook."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import click
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

from grader.commands.common import CALL_TIMEOUT, Seconds, DEVICE, ISOLATION, console, stage_option
from grader.workflows import gradebook
from grader.workflows.grade_all import (DEFAULT_SUBMISSION_TIMEOUT, BatchOptions, Interrupted, Outcome, grade_all, on_sigterm,
                              parse_shard)


def _shard(ctx, param, value):
    if value is None:
        return (1, 1)
    try:
        return parse_shard(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("grade-all")
@click.argument("submissions_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for <id>/results.json, <id>/feedback.html and gradebook.csv.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Submissions graded at the same time (one grading process each).")
@click.option("--shard", metavar="I/N", callback=_shard, default=None,
              help="Grade only the I-th of N slices of the sorted ids (1-based: 1/4 ... 4/4), "
                   "for cluster job arrays; writes gradebook-shard-I-of-N.csv.")
@click.option("--force", is_flag=True, help="Grade again what already has a valid results.json.")
@stage_option("Grade only this stage (repeatable). Default: every stage.")
@DEVICE
@CALL_TIMEOUT
@click.option("--submission-timeout", type=Seconds(min=1, max=24 * 3600), default=DEFAULT_SUBMISSION_TIMEOUT,
              show_default=True, help="Seconds one whole submission may take before it is stopped.")
@ISOLATION
def command(submissions_dir: Path, out: Path, workers: int, shard: tuple[int, int], force: bool,
            stage_names: tuple[str, ...], device: str, call_timeout: float, submission_timeout: float,
            isolation: str) -> None:
    """Grade every submission in SUBMISSIONS_DIR (a sub-folder or .zip each, named by student id).

    Writes OUT/<id>/results.json, OUT/<id>/feedback.html and OUT/gradebook.csv
    (one row per student). A broken submission is one row with its error; a
    re-run skips what is already graded unless --force.

    Example: llmgrade grade-all submissions/ --out graded/ --workers 2
    """
    if out.resolve() == submissions_dir.resolve() or submissions_dir.resolve() in out.resolve().parents:
        raise click.BadParameter("--out must not be inside SUBMISSIONS_DIR (it would be graded as a submission)")
    from grader.worker.layers import IsolationError, isolation as probe

    try:
        level = probe(isolation)   # refuse here, once, rather than in every grading process
    except IsolationError as exc:
        raise click.ClickException(str(exc)) from None
    if level.level != "full":   # said once, before hours of grading, not only inside each results.json
        missing = "; ".join(f"{name}: {why}" for name, active, why in level.report() if not active)
        console.print(f"[yellow]warning:[/] grading at isolation level {level.level!r}, not full "
                      f"({missing}). `llmgrade doctor` explains each layer; --isolation strict refuses this.")
    options = BatchOptions(stage_names=list(stage_names), device=device, call_timeout=call_timeout,
                           workers=workers, shard=shard, force=force, submission_timeout=submission_timeout,
                           isolation=isolation)
    in_flight: dict[str, float] = {}   # id -> when a grading process took it
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), InFlightColumn(in_flight),
                  console=console, transient=False) as progress:
        task = progress.add_task("grading", total=None)

        def started(to_grade: int, skipped: int) -> None:
            progress.update(task, total=to_grade)
            if skipped:
                progress.console.print(f"skipping {skipped} already graded (--force grades them again)")

        def begin(sid: str) -> None:
            in_flight[sid] = time.monotonic()

        def done(outcome: Outcome) -> None:
            in_flight.pop(outcome.id, None)
            if outcome.status == "error":
                progress.console.print(f"[red]{escape(outcome.id)}[/]: {escape(outcome.error)}")
            progress.advance(task)

        interrupted = None
        previous = signal.signal(signal.SIGTERM, on_sigterm)   # stop like Ctrl-C: kill, keep what finished
        try:
            outcomes = grade_all(submissions_dir, out, options, progress=done, on_start=started, on_begin=begin)
        except Interrupted as exc:
            interrupted, outcomes = exc, exc.outcomes
        finally:
            signal.signal(signal.SIGTERM, previous)
    i, n = shard
    target = out / ("gradebook.csv" if n == 1 else f"gradebook-shard-{i}-of-{n}.csv")
    rows, _ = gradebook.collect([out], only={o.id for o in outcomes if o.status != "interrupted"})
    rows += [gradebook.Row(o.id, {}, f"not graded: the batch was stopped by {interrupted.signal_name} "
                                     "(run grade-all again to grade the rest)", target)
             for o in outcomes if o.status == "interrupted"]
    gradebook.write(sorted(rows, key=lambda row: row.id), target)
    regraded: dict[str, list[str]] = {}
    for outcome in outcomes:
        if outcome.regraded:
            regraded.setdefault(outcome.regraded, []).append(outcome.id)
    for reason, ids in regraded.items():
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        console.print(f"graded again, {escape(reason)}: {escape(shown)}", soft_wrap=True)
    counts = {status: sum(o.status == status for o in outcomes) for status in ("graded", "skipped", "error")}
    if interrupted is not None:
        left = sum(o.status == "interrupted" for o in outcomes)
        console.print(f"[red]stopped by {interrupted.signal_name}[/]: {counts['graded']} graded, {left} not graded; "
                      f"{target} is partial (the rows of those {left} say so)")
        sys.exit(128 + (signal.SIGTERM if interrupted.signal_name == "SIGTERM" else signal.SIGINT))
    console.print(f"{len(outcomes)} submissions: {counts['graded']} graded, {counts['skipped']} skipped, "
                  f"{counts['error']} could not be graded; gradebook written to {target}")


class InFlightColumn(ProgressColumn):
    """The submissions being graded now and how long each has run, longest first ("ada 41s")."""
    max_shown = 4

    def __init__(self, in_flight: dict[str, float]):
        super().__init__()
        self.in_flight = in_flight

    def render(self, task) -> Text:
        now = time.monotonic()
        running = sorted(self.in_flight.items(), key=lambda item: item[1])[:self.max_shown]
        shown = ", ".join(f"{sid} {now - began:.0f}s" for sid, began in running)
        more = len(self.in_flight) - len(running)
        return Text(f"now: {shown}" + (f" +{more}" if more > 0 else "") if running else "", style="dim")
