"""How long the reference `train_bpe` takes on 1 MB of text, to 1,000 tokens.

    python benchmarks/bench_train_bpe.py            # the reference (solutions/tokenizer.py)
    python benchmarks/bench_train_bpe.py DIR        # the tokenizer.py in DIR instead

The text is ~1 MB built from datasets/names.txt: names drawn with a fixed seed,
joined by spaces with a newline about every tenth name, so there are ~30,000
distinct pre-tokens, most with and without their leading space. Prints wall and
CPU time (median of the runs) and the first merges learned.
Target (issue): under 10 s wall on the 2-core grading machine.
"""

from __future__ import annotations

import importlib.util
import random
import statistics
import sys
import time
from pathlib import Path

from grader.course.stages import project_root

SIZE = 1_000_000
VOCAB_SIZE = 1000
REPEATS = 3


def build_text(size: int = SIZE, seed: int = 0) -> str:
    names = (project_root() / "datasets" / "names.txt").read_text(encoding="utf-8").split()
    rng = random.Random(seed)
    parts, length = [], 0
    while length < size:
        name = rng.choice(names) + ("\n" if rng.random() < 0.1 else " ")
        parts.append(name)
        length += len(name)
    return "".join(parts)[:size]


def load_tokenizer(folder: Path):
    spec = importlib.util.spec_from_file_location("bench_tokenizer", folder / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else project_root() / "solutions"
    tokenizer = load_tokenizer(folder)
    text = build_text()
    walls, cpus = [], []
    for _ in range(REPEATS):
        wall, cpu = time.perf_counter(), time.process_time()
        ranks = tokenizer.train_bpe(text, VOCAB_SIZE)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    merges = [token for token, _ in sorted(ranks.items(), key=lambda kv: kv[1])[256:]]
    print(f"train_bpe({len(text):,} characters of names, {VOCAB_SIZE}) from {folder / 'tokenizer.py'}")
    print(f"  wall: {statistics.median(walls):6.2f} s   (median of {REPEATS}; target < 10 s)")
    print(f"  CPU:  {statistics.median(cpus):6.2f} s")
    print(f"  {len(ranks)} tokens; first merges: {merges[:8]}")


if __name__ == "__main__":
    main()
