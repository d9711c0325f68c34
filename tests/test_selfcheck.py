"""`llmgrade selfcheck`: the references score full marks and the skeletons zero, from the command line."""

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_selfcheck_passes(monkeypatch):
    from click.testing import CliRunner

    from grader.cli import cli
    from grader.engine.checks import PROVE_TOLERANCES

    monkeypatch.setenv(PROVE_TOLERANCES, "")   # selfcheck sets it: restored for the tests after this one
    run = CliRunner().invoke(cli, ["selfcheck", "--device", "cpu"])   # in this process: no torch import
    assert run.exit_code == 0, run.output
    assert "bigram" in run.output and "ok" in run.output and "FAILED" not in run.output


def test_help_shows_an_example():
    for command in ("grade", "selfcheck", "check"):
        run = subprocess.run([sys.executable, "-m", "grader", command, "--help"], capture_output=True, text=True)
        assert run.returncode == 0 and "Example: llmgrade " + command in run.stdout
