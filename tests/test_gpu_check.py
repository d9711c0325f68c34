"""benchmarks/gpu_check.sh: the one prepared GPU script, checked here in its CPU dry mode."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
PARTS = ["doctor", "selfcheck", "corpus", "devices", "train"]


def run(tmp_path, python):
    env = dict(os.environ, PYTHON=python, LOG_DIR=str(tmp_path))
    return subprocess.run(["bash", str(SCRIPT), "--dry"], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_dry_mode_runs_every_part_and_prints_one_summary_line_each(tmp_path):
    result = run(tmp_path, sys.executable)
    lines = [line for line in result.stdout.splitlines() if line.startswith("PART ")]
    assert [line.split()[1] for line in lines] == PARTS, result.stdout + result.stderr
    assert all(re.match(r"PART \S+\s+ok ", line) for line in lines), result.stdout
    assert result.returncode == 0
    assert "entries behave" in lines[2] and "passed" in lines[3]


def test_a_failing_part_is_reported_and_fails_the_script(tmp_path):
    result = run(tmp_path, "false")        # every part's command fails at once
    lines = [line for line in result.stdout.splitlines() if line.startswith("PART ")]
    assert len(lines) == len(PARTS) and all("FAILED" in line for line in lines), result.stdout
    assert result.returncode == 1 and (tmp_path / "doctor.log").exists()
