"""`llmgrade grade`: one submission, the hidden tests, a results.json."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from grader.commands.common import CALL_TIMEOUT, Seconds, DEVICE, ISOLATION, console, show_results, stage_option


@click.command("grade")
@click.argument("submission", type=click.Path(exists=True, path_type=Path))
@stage_option("Grade only this stage (repeatable). Default: every stage.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("results.json"),
              show_default=True, help="Where to write Gradescope's results.json.")
@DEVICE
@CALL_TIMEOUT
@ISOLATION
@click.option("--time-budget", type=Seconds(min=10, max=24 * 3600), default=None, metavar="SECONDS",
              help="Start no test after this many seconds, so that results are written before a platform's "
                   "limit (Gradescope's run_autograder passes its own). Default: no budget.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the feedback as one self-contained HTML page.")
def command(submission: Path, stage_names: tuple[str, ...], out: Path, device: str,
            call_timeout: float, isolation: str, time_budget: float | None, html_out: Path | None) -> None:
    """Grade one SUBMISSION (a folder, a .zip or notebooks) with the hidden tests.

    Writes results.json in Gradescope's schema and prints a summary. Exits 0
    whenever grading completed, whatever the score; stopped by Ctrl-C or SIGTERM, it
    writes what finished and exits 130 or 143.

    Example: llmgrade grade submissions/ada.zip --stage bigram --out ada.json --html ada.html
    """
    from grader.worker import forks
    forks.start_early(stage_names)   # the template imports torch on another core while this process does
    from grader.workflows.feedback_html import render
    from grader.engine.grade import GradeOptions, grade
    from grader.engine.results_json import ResultsNotWritten, write

    hidden = [str(out.resolve().parent)] + ([str(html_out.resolve().parent)] if html_out else [])
    options = GradeOptions(stage_names=list(stage_names), device=device, call_timeout=call_timeout,
                           hidden_paths=hidden, isolation=isolation, time_budget=time_budget)
    from grader.worker.layers import IsolationError

    stopped_by: list[int] = []

    def stop(signum, frame) -> None:   # Ctrl-C and SIGTERM: the tests left are reported as not run
        stopped_by.append(signum)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        results = grade(submission, options)
    except IsolationError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    try:
        written = write(results, out)
    except ResultsNotWritten as exc:
        written = exc.fallback
        console.print(f"[red]Error:[/] {exc}")
    show_results(results)
    console.print(f"results written to {written}")
    if html_out:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(render(results, title=f"Feedback for {submission.name}"), encoding="utf-8")
        console.print(f"feedback page written to {html_out}")
    if stopped_by:   # not "grading completed": the exit status says so (128 + the signal)
        console.print(f"[red]stopped by {signal.Signals(stopped_by[0]).name}[/]: the results hold the tests "
                      "that finished; the others are marked as not run")
        sys.exit(128 + stopped_by[0])
