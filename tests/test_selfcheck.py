"""`llmgrade selfcheck`: the references score full marks and the skeletons zero, from the command line."""

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_selfcheck_passes():
    run = subprocess.run([sys.executable, "-m", "grader", "selfcheck", "--device", "cpu"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "bigram" in run.stdout and "ok" in run.stdout and "FAILED" not in run.stdout


def test_help_shows_an_example():
    for command in ("grade", "selfcheck", "check"):
        run = subprocess.run([sys.executable, "-m", "grader", command, "--help"], capture_output=True, text=True)
        assert run.returncode == 0 and "Example: llmgrade " + command in run.stdout
