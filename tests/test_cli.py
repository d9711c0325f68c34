"""The command line's contract: lazy start-up, one-line errors, the exit codes of grader/errors.py."""

import subprocess
import sys
from pathlib import Path

import pytest

from grader import errors

NO_TORCH_FOR_HELP = r"""
import sys
from grader.cli import cli
names = [None, *cli.list_commands(None)]
for name in names:
    try:
        cli.main([name, "--help"] if name else ["--help"], prog_name="llmgrade", standalone_mode=False)
    except SystemExit:
        pass
heavy = sorted(m for m in ("torch", "numpy", "jsonschema", "nbformat", "tiktoken") if m in sys.modules)
print("HEAVY", heavy, len(names))
"""


def test_help_of_every_command_imports_no_torch():
    """`--help` (and a command that grades nothing) never pays for torch: 0.15 s, not 2.5 s."""
    run = subprocess.run([sys.executable, "-c", NO_TORCH_FOR_HELP], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    line = [l for l in run.stdout.splitlines() if l.startswith("HEAVY")][-1]
    assert line.startswith("HEAVY []"), line
    assert int(line.split()[-1]) >= 10   # the group and every command


def test_help_states_the_exit_codes():
    run = subprocess.run([sys.executable, "-m", "grader", "--help"], capture_output=True, text=True, timeout=60)
    text = " ".join(run.stdout.split())
    assert run.returncode == 0 and "2 bad usage, 3 internal error" in text, text


def test_bad_usage_exits_2_in_one_line():
    run = subprocess.run([sys.executable, "-m", "grader", "grade", "solutions", "--timeout", "-1"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == errors.USAGE
    assert run.stderr.strip().startswith("Error: Invalid value for '--timeout'")
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr   # the contract: one line, no usage block


def test_llmgrade_alone_shows_the_help(monkeypatch, capsys):
    """A bare `llmgrade` lists the commands (click's no-args help, exit 2), not an internal error."""
    from grader.cli import main
    monkeypatch.setattr(sys, "argv", ["llmgrade"])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    assert exit_.value.code in (0, errors.USAGE)
    assert "Commands:" in out.out + out.err and "Internal error" not in out.err


def test_an_internal_error_exits_3_with_its_traceback_in_a_file(monkeypatch, capsys):
    from grader.cli import main
    from grader.commands import doctor

    def broken(*args, **kwargs):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(doctor, "print_isolation", broken)
    monkeypatch.setattr(sys, "argv", ["llmgrade", "doctor"])
    monkeypatch.delenv("LLMGRADE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == errors.INTERNAL
    assert "Internal error (a bug in llmgrade, not in your work): RuntimeError: a bug of ours" in err
    crash = Path(err.split("The traceback is in ")[1].split()[0])
    assert "raise RuntimeError" in crash.read_text()
    crash.unlink()


def test_a_grader_error_is_one_line_with_its_exit_code(monkeypatch, capsys, tmp_path):
    from grader.cli import main

    monkeypatch.setenv("LLMGRADE_ROOT", str(tmp_path))   # a course without hidden tests: a student bundle
    (tmp_path / "sub").mkdir()
    monkeypatch.setattr(sys, "argv", ["llmgrade", "grade", str(tmp_path / "sub"), "--out", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == errors.USAGE
    assert err.strip() == ("Error: hidden tests are not part of the student bundle; "
                           "`llmgrade check` runs the public tests"), err
