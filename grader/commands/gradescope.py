"""`llmgrade gradescope build`: the Gradescope autograder zip (`setup.sh`, `run_autograder` at its root)."""

from __future__ import annotations

from pathlib import Path

import click

from grader.commands.common import console, stage_option
from grader.course import autograder_zip


@click.group("gradescope", invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """Gradescope: build the autograder zip to upload.

    Example: llmgrade gradescope build autograder.zip
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


def _zip_path(ctx, param, value: Path) -> Path:
    if value.suffix.lower() != ".zip":
        raise click.BadParameter(f"{value} does not end in .zip")
    return value


@command.command("build")
@click.argument("out_zip", metavar="OUT.zip", type=click.Path(dir_okay=False, path_type=Path),
                callback=_zip_path)
@stage_option("Grade only this stage (repeatable). Default: every stage.")
@click.option("--torch-index", default=autograder_zip.CPU_TORCH_INDEX, show_default=True,
              help="Where setup.sh installs torch from (e.g. https://download.pytorch.org/whl/cu124 "
                   "for CUDA).")
@click.option("--torch-version", default=None, metavar="VERSION",
              help="The torch version setup.sh installs. Default: the one installed here.")
def build(out_zip: Path, stage_names: tuple[str, ...], torch_index: str, torch_version: str | None) -> None:
    """Build the Gradescope autograder zip OUT.zip.

    setup.sh installs torch and the course's dependencies on Gradescope's
    image; run_autograder grades /autograder/submission into
    /autograder/results/results.json (AUTOGRADER_ROOT replaces /autograder).

    Example: llmgrade gradescope build autograder.zip --stage bigram
    """
    if not torch_index.startswith(("https://", "http://", "file://")):
        raise click.BadParameter(f"{torch_index!r} is not a URL", param_hint="--torch-index")
    try:
        names = autograder_zip.build(out_zip, stage_names, torch_index=torch_index,
                                 torch_requirement=f"torch=={torch_version}" if torch_version else None)
    except autograder_zip.GradescopeError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"autograder written to {out_zip} ({len(names)} files); upload it on Gradescope "
                  "(Configure Autograder, Zip file upload)")
    console.print(autograder_zip.container_note(), highlight=False)
