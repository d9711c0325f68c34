"""`llmgrade check`: a student runs the public tests on their working copy.

Prints a table of the stages (points, tests passed) and, for each failed test,
its feedback in a line or two (`--verbose`: all of it). Exit code: 0 when every
checked stage scored full marks, 1 when a test failed (so scripts and CI can
use it), 2 for a bad argument or a working copy without any stage module.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from grader.commands.common import DEVICE, console, known_stages
from grader.course import stages
from grader.engine.results_json import stage_scores

SHORT_LINES = 2   # feedback lines per failed test without --verbose


@click.command("check")
@click.argument("stage_names", nargs=-1, metavar="[STAGE]...", callback=known_stages)
@click.option("--path", type=click.Path(exists=True, path_type=Path), default=Path("."), show_default=True,
              help="Your working copy: the folder with bigram.py, ... (or bigram.ipynb, ...), a zip, or one file.")
@DEVICE
@click.option("-v", "--verbose", is_flag=True, help="Show each failure's whole feedback.")
@click.option("--debug", is_flag=True,
              help="Run the public tests in this process, so that breakpoint() and pdb work in your code. "
                   "For debugging only: nothing is graded and your code is not sandboxed.")
def command(stage_names: tuple[str, ...], path: Path, device: str, verbose: bool, debug: bool) -> None:
    """Run the public tests of STAGE (default: every stage) on your working copy.

    Prints each stage's points and what to fix. Exits 0 when every stage
    checked scored full marks, 1 when a test failed.

    Example: llmgrade check bigram --path ~/llm-course
             llmgrade check --debug bigram    (breakpoint() in your bigram.py stops there)
    """
    from grader.engine.grade import GradeOptions, grade
    from grader.workflows.submission_zip import has_stage_modules

    all_names = [s.name for s in stages.discover()]
    if path.is_dir() and not has_stage_modules(path, all_names) and not any(
            has_stage_modules(sub, all_names) for sub in path.iterdir() if sub.is_dir()):
        raise click.UsageError(
            f"no stage module in {path} (expected {all_names[0]}.py, {all_names[1]}.py, ... or their .ipynb); "
            "run it in your working copy or pass --path")
    options = GradeOptions(stage_names=list(stage_names), device=device, tests="public", debug=debug)
    if debug:   # no spinner: it would draw over pdb's prompt
        console.print(DEBUG_BANNER)
        results = grade(path, options)
        console.print("[yellow]debug run:[/] these results are for debugging; nothing was graded "
                      "(run `llmgrade check` without --debug for the sandboxed check).")
    else:
        with console.status("running the public tests..."):
            results = grade(path, options)
    if not show(results, verbose):
        sys.exit(1)


DEBUG_BANNER = ("[yellow]debug mode:[/] the public tests run in this process, on your own code, so that "
                "breakpoint() and pdb work (your prints show as they happen). This mode is for debugging "
                "and grades nothing: there is no sandbox and no time limit per call.")


def show(results: dict, verbose: bool = False) -> bool:
    """Print the table and the failures; True when every test passed."""
    scores = stage_scores(results)
    counts: dict[str, list[int]] = {}
    for test in results["tests"]:
        entry = counts.setdefault(_stage(test), [0, 0])
        entry[0] += test["status"] == "passed"
        entry[1] += 1
    table = Table("stage", "points", "tests passed", "", title="llmgrade check (public tests)")
    for name, (score, maximum) in scores.items():
        passed, total = counts.get(name, (0, 0))
        full = maximum > 0 and score >= maximum
        table.add_row(name, f"{score:g} / {maximum:g}", f"{passed} / {total}", "[green]✓[/]" if full else "[red]✗[/]")
    console.print(table)
    for line in _notes(results, set(scores)):
        console.print(f"[yellow]note:[/] {escape(line)}", soft_wrap=True)
    failed = [t for t in results["tests"] if t["status"] != "passed"]
    cut = False
    for name in scores:
        stage_failed = [t for t in failed if _stage(t) == name]
        firsts = {_lines(t)[0] for t in stage_failed}
        import_error = next((line for line in firsts if line.startswith(f"importing {name}.py ")), None)
        if len(stage_failed) > 1 and (len(firsts) == 1 or import_error):
            # one cause (a missing module, one that does not import): say it once
            console.print(f"[red]✗[/] {escape(name)}: all {len(stage_failed)} failed tests: "
                          f"{escape(import_error or firsts.pop())}", soft_wrap=True)
            continue
        for test in stage_failed:
            lines = _lines(test)
            shown = lines if verbose else lines[:SHORT_LINES]
            cut |= len(shown) < len(lines)
            console.print(f"[red]✗[/] {escape(test['name'])}", soft_wrap=True)
            for line in shown:
                console.print(f"    {escape(line)}", soft_wrap=True)
            if len(shown) < len(lines):
                console.print("    ...", soft_wrap=True)
    if cut:
        console.print("(llmgrade check --verbose shows each failure in full)")
    if not failed:
        console.print("[green]All public tests passed.[/] The hidden tests check more: see each handout.")
    return not failed


def _notes(results: dict, checked: set[str]) -> list[str]:
    """The summary's lines, less those only about stages that were not checked."""
    notes = []
    for line in (results.get("output") or "").splitlines():
        if not line.strip() or line.startswith("Graded"):
            continue
        about = {s.name for s in stages.discover() if f"{s.name}.py" in line or f"{s.name}.ipynb" in line}
        if not about or about & checked:
            notes.append(line)
    return notes


def _stage(test: dict) -> str:
    return test["tags"][0] if test.get("tags") else "?"


def _lines(test: dict) -> list[str]:
    return [line for line in test["output"].splitlines() if line.strip()] or ["failed"]
