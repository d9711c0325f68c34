"""What the commands share: the console, the --device and --stage options, the results summary."""

from __future__ import annotations

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from grader.course import stages
from grader.engine.results_json import stage_scores

console = Console(highlight=False)
FEEDBACK_LINES = 8  # per failed test in the terminal; results.json has it all

DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                      show_default=True, help="Run numeric tests on these devices (auto: CPU, and CUDA when present).")


class Seconds(click.FloatRange):
    """A number of seconds in a range; unlike click.FloatRange, NaN is refused (it compares false
    with every bound, so it would slip through)."""
    name = "number of seconds"

    def convert(self, value, param, ctx):
        seconds = super().convert(value, param, ctx)
        if seconds != seconds:
            self.fail(f"{value!r} is not a number of seconds.", param, ctx)
        return seconds


# A call needs time to run at all (0 would fail every student with exit 0), and more than an
# hour per call is a typo for what Gradescope's whole run may take.
CALL_TIMEOUT = click.option(
    "--timeout", "call_timeout", type=Seconds(min=0, min_open=True, max=3600), default=10.0,
    show_default=True, metavar="SECONDS", help="Seconds each call into a submission may take.")


ISOLATION = click.option(
    "--isolation", type=click.Choice(["auto", "strict"]), default="auto", show_default=True,
    help="auto: the strongest isolation this machine allows (see `llmgrade doctor`); "
         "strict: refuse to grade without a uid of its own, namespaces and seccomp for every worker.")


def known_stages(ctx, param, names):
    try:
        stages.select(list(names))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return names


def stage_option(help_text: str):
    return click.option("--stage", "stage_names", multiple=True, metavar="STAGE", help=help_text,
                        callback=known_stages)


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
