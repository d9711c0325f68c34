"""The `llmgrade` command line: a click group whose commands live in grader/commands/, one per module.

Errors are one line and a non-zero exit; set LLMGRADE_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import click

from grader import commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmgrade")
def cli() -> None:
    """Grade the stages of the GPT course: hidden tests, run safely, Gradescope results."""


def _add_commands() -> None:
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"grader.commands.{info.name}")
        if isinstance(getattr(module, "command", None), click.Command):
            cli.add_command(module.command)


_add_commands()


def main() -> None:
    try:
        code = cli(standalone_mode=False)   # returns a command's ctx.exit(code) instead of exiting
        sys.exit(code if isinstance(code, int) else 0)
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
