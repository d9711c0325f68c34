"""How fast the command line starts when it grades nothing (issue 12's target: --help < 0.3 s).

    python benchmarks/bench_cli_start.py [--runs 7]

Times fresh processes (the median of --runs): the interpreter alone, `llmgrade --help`, a
command's `--help`, and `import torch` for scale. The command modules import torch only
inside the commands that grade (tests/test_cli.py checks that no --help imports it).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    script = shutil.which("llmgrade") or ""
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "llmgrade --help": [script, "--help"] if script else [sys.executable, "-m", "grader", "--help"],
        "llmgrade grade-all --help": [script or sys.executable, *([] if script else ["-m", "grader"]), "grade-all", "--help"],
        "llmgrade doctor": [script or sys.executable, *([] if script else ["-m", "grader"]), "doctor"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    }
    print(f"{'command':30} {'median s':>9}   ({args.runs} fresh processes each)")
    for name, command in cases.items():
        print(f"{name:30} {median_seconds(command, args.runs):9.3f}", flush=True)


if __name__ == "__main__":
    main()
