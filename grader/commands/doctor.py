"""`llmgrade doctor`: which isolation layers protect the grading on this machine, and why not the others."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from grader.commands.common import console


def print_isolation() -> None:
    """The layer table (also printed by selfcheck)."""
    from grader.worker.layers import isolation

    iso = isolation("auto")
    table = Table("layer", "active", "what it does / why it is off", title=f"isolation level: {iso.level}")
    for name, active, detail in iso.report():
        table.add_row(name, "[green]yes[/]" if active else "[red]no[/]", escape(detail))
    console.print(table)
    if iso.level != "full":
        console.print("Without the missing layers some routes stay open: see the threat-model table in "
                      "the README (section \"Isolation\").")


@click.command("doctor")
@click.option("--isolation", type=click.Choice(["auto", "strict"]), default="auto", show_default=True,
              help="strict: exit 1 unless uid, namespaces and seccomp are all available.")
def command(isolation: str) -> None:
    """Print which isolation layers grading gets on this machine, and why not the others.

    Layers: a uid of its own per worker (the grader must be root), namespaces (mount
    allow-list, pid, network, ipc, uts: root with CAP_SYS_ADMIN, so not in Docker),
    seccomp, cgroups, rlimits, the audit hook.

    Example: sudo llmgrade doctor --isolation strict
    """
    from grader.worker.layers import IsolationError, isolation as probe

    print_isolation()
    try:
        probe(isolation)
    except IsolationError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        raise click.exceptions.Exit(1) from None
