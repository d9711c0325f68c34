"""The corpus that proves the hidden tests: buggy submissions must lose points, correct ones must not.

    tests/corpus/<stage>/buggy/<name>.py     one plausible student bug each
    tests/corpus/<stage>/correct/<name>.py   a correct solution in another style

Each entry is a whole `<stage>.py` (or a folder holding one and its helpers).
Its docstring says what it is: `BUG: ...` or `STYLE: ...`, and for a bug the
hidden tests name, `EXPECT: <words the feedback must contain>`. An entry whose
bug only shows on a GPU (a result left on the CPU) says `REQUIRES: cuda`.

An upstream difference that later parts must not be charged for again (error
carried forward) says which tests may charge it: `PART: test_ffn_* test_gelu*`
(fnmatch patterns over test function names). Such an entry is graded in full,
and it behaves only if every failing test matches PART and names the bug.

    python -m grader.corpus --report [--stage transformer] [tests/corpus]
    python -m grader.corpus --report --why --entry 'attention/heads_*'
    python -m grader.corpus --kind correct --device cuda

The first grades every buggy entry in full and prints what each one costs (points,
failing tests, how many of them name the bug, how many lie outside its PART); the
second judges entries as tests/test_corpus.py does (benchmarks/gpu_check.sh uses it).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from grader import scratch
from grader.grade import GradeOptions, grade
from grader.results import grader_errors

_EXPECT = re.compile(r"^\s*EXPECT:\s*(.+?)\s*$", re.MULTILINE)
_REQUIRES = re.compile(r"^\s*REQUIRES:\s*(.+?)\s*$", re.MULTILINE)
_PART = re.compile(r"^\s*PART:\s*(.+?)\s*$", re.MULTILINE)


@dataclass
class Entry:
    stage: str
    kind: str          # "buggy" or "correct"
    path: Path

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.kind}/{self.path.stem}"

    @property
    def source(self) -> str:
        path = self.path if self.path.is_file() else self.path / f"{self.stage}.py"
        return path.read_text(encoding="utf-8")

    @property
    def expect(self) -> str | None:
        match = _EXPECT.search(self.source)
        return match[1] if match else None

    @property
    def requires(self) -> str | None:
        match = _REQUIRES.search(self.source)
        return match[1] if match else None

    @property
    def part(self) -> list[str]:
        """fnmatch patterns of the test functions allowed to charge this bug (empty: any)."""
        match = _PART.search(self.source)
        return match[1].replace(",", " ").split() if match else []

    def in_part(self, function: str) -> bool:
        return not self.part or any(fnmatch.fnmatchcase(function, p) for p in self.part)


@dataclass
class Verdict:
    entry: Entry
    score: float
    max_score: float
    ok: bool
    detail: str
    failing: list = None    # (test function, feedback names the bug) per failing test, when graded in full
    feedback: dict = None   # test function -> its feedback, per failing test, when graded in full


def entries(corpus_root: Path, stage_names: list[str] | None = None,
            names: list[str] | None = None) -> list[Entry]:
    """The corpus's entries, optionally only those stages, or names matching `<stage>/<name>` globs."""
    found = []
    for stage_dir in sorted(p for p in Path(corpus_root).iterdir() if p.is_dir()):
        if stage_names and stage_dir.name not in stage_names:
            continue
        for kind in ("buggy", "correct"):
            for path in sorted((stage_dir / kind).glob("*")):
                short = f"{stage_dir.name}/{path.stem}"
                if names and not any(fnmatch.fnmatchcase(short, n) for n in names):
                    continue
                if path.suffix == ".py" or path.is_dir():
                    found.append(Entry(stage_dir.name, kind, path))
    return found


def judge(entry: Entry, options: GradeOptions | None = None, *, full: bool = False) -> Verdict:
    """Grade one corpus entry with its stage's hidden tests and say whether it behaved.

    A buggy entry stops at the first test that catches (and names) it, unless it
    has a PART or `full` is set: then every test runs, and `failing` lists them.
    """
    options = options or GradeOptions()
    options.stage_names = [entry.stage]
    expect = entry.expect
    records = []
    full = full or bool(entry.part)
    if entry.kind == "buggy" and not full:   # a bug is proved once one test catches and names it
        options.stop_when = lambda record: (not record.passed and not record.internal_error and (
            expect is None or expect in "\n".join(record.feedback)))
    else:
        options.stop_when = lambda record: records.append(record) and False
    folder = scratch.mkdtemp("llmgrade-corpus-")
    try:
        if entry.path.is_dir():
            shutil.copytree(entry.path, folder / "submission")
        else:
            (folder / "submission").mkdir()
            shutil.copy(entry.path, folder / "submission" / f"{entry.stage}.py")
        results = grade(folder / "submission", options)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    score = results["score"]
    crashed = grader_errors(results)
    maximum = sum(t["max_score"] for t in results["tests"])
    feedback = "\n".join(t["output"] for t in results["tests"] if t["status"] == "failed")
    failing = [(r.function, expect is None or expect in "\n".join(r.feedback))
               for r in records if r.score < r.max_score] if full else None
    by_test = {r.function: "\n".join(r.feedback) for r in records if r.score < r.max_score}
    if crashed:
        return Verdict(entry, score, maximum, False,
                       f"hidden tests crashed (grader errors) in: {', '.join(crashed)}", failing, by_test)
    if entry.kind == "correct":
        ok = maximum > 0 and score == maximum
        return Verdict(entry, score, maximum, ok, "full marks" if ok else f"lost points:\n{feedback}")
    named = expect is None or expect in feedback
    outside = sorted({f for f, _ in failing or () if not entry.in_part(f)})
    ok = score < maximum and named and not outside
    detail = ("caught" if score < maximum else "NOT caught: full marks") + (
        "" if named else f"; feedback does not name the mistake ({expect!r}):\n{feedback}") + (
        f"; charged outside its PART ({' '.join(entry.part)}) by: {', '.join(outside)}" if outside else "")
    return Verdict(entry, score, maximum, ok, detail, failing, by_test)


def report(corpus_root: Path, stage_names: list[str] | None = None,
           options: GradeOptions | None = None, *, why: bool = False,
           names: list[str] | None = None) -> list[Verdict]:
    """Grade every buggy entry in full and print one line each, then a summary.

    With `why`, each entry's line is followed by the failing tests that do not name
    its bug or lie outside its PART, and the start of their feedback.
    """
    import copy
    import torch
    verdicts = []
    print(f"{'entry':48} {'lost':>6} {'failed':>6} {'named':>6} {'outside':>7}")
    for entry in entries(corpus_root, stage_names, names):
        if entry.kind != "buggy" or (entry.requires == "cuda" and not torch.cuda.is_available()):
            continue
        verdict = judge(entry, copy.copy(options or GradeOptions()), full=True)
        verdicts.append(verdict)
        failing = verdict.failing or []
        named = sum(1 for _, n in failing if n) if entry.expect else "-"
        outside = sum(1 for f, _ in failing if not entry.in_part(f)) if entry.part else "-"
        print(f"{entry.name:48} {verdict.max_score - verdict.score:6.1f} {len(failing):6} "
              f"{named!s:>6} {outside!s:>7}{'' if verdict.score < verdict.max_score else '  NOT CAUGHT'}",
              flush=True)
        for function, is_named in failing if why else ():
            if (entry.expect and not is_named) or not entry.in_part(function):
                lines = (verdict.feedback or {}).get(function, "").splitlines()[:4]
                print(f"    {function}: " + "\n      ".join(lines), flush=True)
    caught = sum(v.score < v.max_score for v in verdicts)
    with_expect = [v for v in verdicts if v.entry.expect]
    all_named = sum(all(n for _, n in v.failing or ()) for v in with_expect)
    parted = [v for v in verdicts if v.entry.part]
    in_part = sum(all(v.entry.in_part(f) for f, _ in v.failing or ()) for v in parted)
    print(f"\n{caught}/{len(verdicts)} buggy entries lose points; "
          f"{all_named}/{len(with_expect)} with EXPECT are named by every failing test; "
          f"{in_part}/{len(parted)} with PART are charged only inside it")
    return verdicts


def meets_targets(verdict: Verdict) -> bool:
    """A buggy entry graded in full meets the report's targets: it loses points, every failing
    test names its bug (when it has an EXPECT) and none lies outside its PART."""
    failing = verdict.failing or []
    return (verdict.score < verdict.max_score and all(named for _, named in failing)
            and all(verdict.entry.in_part(function) for function, _ in failing))


def check(corpus_root: Path, stage_names: list[str] | None = None, *, kind: str | None = None,
          requires: str | None = None, options: GradeOptions | None = None,
          names: list[str] | None = None) -> list[Verdict]:
    """Judge entries (as tests/test_corpus.py does) and print one line each; for scripts without pytest."""
    import copy
    verdicts = []
    for entry in entries(corpus_root, stage_names, names):
        if (kind and entry.kind != kind) or (requires and entry.requires != requires):
            continue
        verdict = judge(entry, copy.copy(options or GradeOptions()))
        verdicts.append(verdict)
        print(f"{'ok  ' if verdict.ok else 'FAIL'} {entry.name:48} {verdict.score:g}/{verdict.max_score:g}"
              + ("" if verdict.ok else f"\n     {verdict.detail[:2000]}"), flush=True)
    print(f"\n{sum(v.ok for v in verdicts)}/{len(verdicts)} entries behave")
    return verdicts


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m grader.corpus", description=__doc__.split("\n")[0])
    parser.add_argument("corpus", nargs="?", default="tests/corpus", type=Path)
    parser.add_argument("--report", action="store_true", help="grade every buggy entry in full, print costs")
    parser.add_argument("--stage", action="append", help="only this stage (repeatable)")
    parser.add_argument("--entry", action="append",
                        help="only entries matching this <stage>/<name> glob (repeatable)")
    parser.add_argument("--why", action="store_true",
                        help="with --report: show the failing tests that do not name the bug, or lie outside PART")
    parser.add_argument("--kind", choices=["buggy", "correct"], help="without --report: only these entries")
    parser.add_argument("--requires", help="without --report: only entries with this REQUIRES (cuda)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    options = GradeOptions(device=args.device, call_timeout=10.0)
    if args.report:
        verdicts = report(args.corpus, args.stage, options, why=args.why, names=args.entry)
        return 0 if all(meets_targets(v) for v in verdicts) else 1
    verdicts = check(args.corpus, args.stage, kind=args.kind, requires=args.requires, options=options,
                     names=args.entry)
    return 0 if verdicts and all(v.ok for v in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
