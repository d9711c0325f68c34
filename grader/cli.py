"""The `llmgrade` command line: a click group whose commands live in grader/commands/, one per module.

A command's module is imported only when that command runs (or for `--help`, which reads each
command's short help): their tops import click and rich, never torch, so `llmgrade --help` and
the commands that grade nothing start in a fraction of a second (benchmarks/bench_cli_start.py).

Exit codes (grader/errors.py): 0 done, 1 a test failed or problems were found, 2 bad usage,
3 internal error. Errors are one line; an internal error's traceback goes to a file named in
that line (LLMGRADE_DEBUG=1 prints it instead).
"""

from __future__ import annotations

import atexit
import functools
import importlib
import os
import pkgutil
import sys
import tempfile
import traceback

import click

from grader import commands
from grader.errors import INTERNAL, GraderError

# click >= 8.2 shows the help for a bare `llmgrade` by raising this usage error (exit 2).
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())
NOT_COMMANDS = {"common"}   # modules of grader/commands/ that hold shared code, not a command


@functools.cache
def _command_names() -> list[str]:
    """The modules of grader/commands/ as command names (read once: --help asks for each command)."""
    return sorted(info.name.replace("_", "-") for info in pkgutil.iter_modules(commands.__path__)
                  if info.name not in NOT_COMMANDS)


class LazyGroup(click.Group):
    """The commands of grader/commands/: module `grade_all` is command `grade-all`, its `command`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return _command_names()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _command_names():
            return None
        module = importlib.import_module(f"grader.commands.{name.replace('-', '_')}")
        return module.command

    # The contract: an error is one line. click shows a usage error with the usage and a hint
    # above it when the error knows its context: forget it, and only "Error: ..." is printed.
    def make_context(self, *args, **kwargs) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            if not isinstance(exc, _NO_ARGS_IS_HELP):   # `llmgrade` alone: the help, which needs ctx
                exc.ctx = None
            raise

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            exc.ctx = None
            raise


EPILOG = ("Exit codes: 0 done (grade, grade-all: grading completed, whatever the score), 1 a test "
          "failed or problems were found, 2 bad usage, 3 internal error (a bug of ours).")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(package_name="llmgrade")
def cli() -> None:
    """Grade the stages of the GPT course: hidden tests, run safely, Gradescope results."""


def main() -> None:
    """The console script: click's own handling of usage errors (exit 2) and of its exceptions,
    one line for our GraderError (its exit code), and exit 3 for anything else."""
    try:
        cli.main(prog_name="llmgrade", standalone_mode=True)
    except GraderError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 -- a bug of ours: one line, the traceback in a file
        if os.environ.get("LLMGRADE_DEBUG"):
            raise
        with tempfile.NamedTemporaryFile("w", prefix="llmgrade-crash-", suffix=".txt", delete=False) as log:
            traceback.print_exc(file=log)
        click.echo(f"Internal error (a bug in llmgrade, not in your work): {type(exc).__name__}: {exc}\n"
                   f"The traceback is in {log.name} (LLMGRADE_DEBUG=1 prints it here); please report it.",
                   err=True)
        sys.exit(INTERNAL)


def run() -> None:
    """The `llmgrade` executable: `main`, then an exit without the interpreter's teardown, which
    with torch and sympy loaded takes most of a second of a short command. The atexit handlers
    (scratch folders, the worker template) run first and the output is flushed."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
