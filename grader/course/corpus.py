"""The corpus that proves the hidden tests: buggy submissions must lose points, correct ones must not.

    tests/corpus/<stage>/buggy/<name>.patch  one plausible student bug each
    tests/corpus/<stage>/correct/<name>.py   a correct solution in another style
                                             (or <name>.patch, or a folder <name>/)

An entry is a patch, a whole file, or a folder. A patch is a header, then a unified
diff (`--- a/<stage>.py` / `+++ b/<stage>.py`; helper modules as new files) that
`git apply` applies to the marker-free reference (solutions/<stage>.py and the
solutions it imports, `# BEGIN/END SOLUTION` lines removed), or, when its header
says `BASE: correct/<name>`, to that entry of its stage as materialised (a file, a
folder with its helpers, or a patch itself: bugs written in a correct style, a
correct style written as a change of another). A patch that no longer applies, or
whose BASE names no entry, fails its entry. Most buggy entries are patches, and so
are the correct styles that are the reference (or another style) with some bodies
rewritten; a style far from any stays a whole `<name>.py` (or a folder holding one
and its helpers). A folder's helpers that are the references of other stages are not
copied: its stage module says `REFERENCE_MODULES: embeddings attention`, and those
come from solutions/, marker-free. A folder or a patch takes helpers that are other
stages' corpus entries with `ENTRY_MODULES: attention/correct/running_sums` (each
`<stage>/<kind>/<name>`, of another stage): that entry's stage module, materialised,
is written over the base before the diff applies. A patch with a BASE or ENTRY_MODULES
may have no diff at all (a header only): the entry is its base with those modules
(transformer/correct/running_sums is plain_loops' transformer.py over the running-sums
attention and loss). A patch with neither and no diff, or with hunk lines but no
`--- a/<file>` start, fails its entry; so does a BASE / ENTRY_MODULES chain that
comes back to its entry.

The header (a patch's text before its diff, a whole file's docstring) says what
it is: `BUG: ...` or `STYLE: ...`, and for a bug the hidden tests name,
`EXPECT: <words the feedback must contain>`, and `CAUGHT_BY: <test file>::<test>`,
one hidden test that fails for it and names it (the fast check). An entry whose
bug only shows on a GPU (a result left on the CPU) says `REQUIRES: cuda`.

A correct entry gets full marks, unless it breaks a course rule that is not about
its values (a Python loop over positions is slow): then `LOSES: <test file>::<test>`
names the tests that charge the rule, and it must lose exactly those.

An upstream difference that later parts must not be charged for again (error
carried forward) says which tests may charge it: `PART: test_ffn_* test_gelu*`
(fnmatch patterns over test function names). Such an entry is graded in full,
and it behaves only if every failing test matches PART and names the bug.

    python -m grader.course.corpus --report [--stage transformer] [tests/corpus]
    python -m grader.course.corpus --report --why --entry 'attention/heads_*'
    python -m grader.course.corpus --kind correct --device cuda
    python -m grader.course.corpus --caught-by [--stage bigram]
    python -m grader.course.corpus --to-patch --entry 'bigram/new_bug'

The first grades every buggy entry in full and prints what each one costs (points,
failing tests, how many of them name the bug, how many lie outside its PART); the
second judges entries as tests/test_corpus.py does (benchmarks/gpu_check.sh uses it);
`--caught-by` runs only each buggy entry's CAUGHT_BY test (seconds an entry);
`--to-patch` turns whole-file buggy entries into patches (for a new entry: write
it as a whole copy of the reference, then convert it). A correct style written as a
patch is made by hand (corpus_convert.make_diff from the reference's files, or from
`entry_files(find_entry(...))` of its BASE, to the files it should be).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from grader import scratch

from grader.course.corpus_entries import (  # noqa: F401 -- re-exported: the one module the corpus's users import
    Entry, EntryError, PatchError, apply_patch, entries, entry_files, find_entry, materialise, module_text,
    reference_files)
from grader.engine.grade import GradeOptions, grade
from grader.engine.results_json import grader_errors

@dataclass
class Verdict:
    entry: Entry
    score: float
    max_score: float
    ok: bool
    detail: str
    failing: list = None    # (test function, feedback names the bug) per failing test, when graded in full
    feedback: dict = None   # test function -> its feedback, per failing test, when graded in full
    first_named: str | None = None   # the first test (function) that failed, named the bug, inside PART


def judge(entry: Entry, options: GradeOptions | None = None, *, full: bool = False) -> Verdict:
    """Grade one corpus entry with its stage's hidden tests and say whether it behaved.

    A buggy entry stops once a test has caught (and named) it and its CAUGHT_BY test has
    run, unless it has a PART or `full` is set: then every test runs, and `failing` lists
    them. Its CAUGHT_BY test must be among those that catch and name it.
    """
    options = options or GradeOptions()
    options.stage_names = [entry.stage]
    expect = entry.expect
    records = []
    full = full or bool(entry.part)
    caught_by = entry.caught_by_test if entry.kind == "buggy" else None

    def names_it(record) -> bool:
        return (not record.passed and not record.internal_error and entry.in_part(record.function)
                and (expect is None or expect in "\n".join(record.feedback)))

    def proved() -> bool:   # a test caught and named it, and its CAUGHT_BY test has run
        return any(names_it(r) for r in records) and (caught_by is None or any(r.function == caught_by for r in records))

    if entry.kind == "buggy" and not full:
        options.stop_when = lambda record: records.append(record) or proved()
    else:
        options.stop_when = lambda record: records.append(record) and False
    folder = scratch.mkdtemp("llmgrade-corpus-")
    try:
        results = grade(materialise(entry, folder / "submission"), options)
    except EntryError as error:
        return Verdict(entry, 0.0, 0.0, False, str(error), [] if full else None, {})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    score = results["score"]
    crashed = grader_errors(results)
    maximum = sum(t["max_score"] for t in results["tests"])
    feedback = "\n".join(t["output"] for t in results["tests"] if t["status"] == "failed")
    failing = [(r.function, expect is None or expect in "\n".join(r.feedback))
               for r in records if r.score < r.max_score] if full else None
    by_test = {r.function: "\n".join(r.feedback) for r in records if r.score < r.max_score}
    first = next((r.function for r in records if names_it(r)), None)
    if crashed:
        return Verdict(entry, score, maximum, False,
                       f"hidden tests crashed (grader errors) in: {', '.join(crashed)}", failing, by_test, first)
    if entry.kind == "correct":
        lost = {r.function for r in records if r.score < r.max_score}
        ok = maximum > 0 and lost == entry.loses
        detail = ("full marks" if not lost else f"lost only {', '.join(sorted(lost))}") if ok else (
            f"lost points:\n{feedback}" if lost - entry.loses else
            f"kept the points of {', '.join(sorted(entry.loses - lost))} (its LOSES line)")
        return Verdict(entry, score, maximum, ok, detail)
    named = expect is None or expect in feedback
    outside = sorted({f for f, _ in failing or () if not entry.in_part(f)})
    runs = [r for r in records if r.function == caught_by]
    caught_by_ok = caught_by is None or any(names_it(r) for r in runs)
    ok = score < maximum and named and not outside and caught_by_ok
    detail = ("caught" if score < maximum else "NOT caught: full marks") + (
        "" if named else f"; feedback does not name the mistake ({expect!r}):\n{feedback}") + (
        f"; charged outside its PART ({' '.join(entry.part)}) by: {', '.join(outside)}" if outside else "") + (
        "" if caught_by_ok else f"; its CAUGHT_BY test {entry.caught_by} "
        f"{'did not run (no such test?)' if not runs else 'did not fail naming it'}")
    return Verdict(entry, score, maximum, ok, detail, failing, by_test, first)


def judge_caught_by(entry: Entry, options: GradeOptions | None = None) -> Verdict:
    """The fast check of a buggy entry: grade it with only its CAUGHT_BY test, which must fail,
    name the bug (EXPECT) and lie inside its PART."""
    if not entry.caught_by:
        return Verdict(entry, 0.0, 0.0, False, f"{entry.name}: no CAUGHT_BY line")
    options = options or GradeOptions()
    options.only_tests = [entry.caught_by]
    verdict = judge(entry, options, full=True)
    if verdict.ok and not verdict.failing:
        verdict.ok, verdict.detail = False, f"{entry.caught_by} did not fail"
    return verdict


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
        if not verdict.max_score:   # its patch does not apply, or nothing was graded
            print(f"{entry.name:48} FAILED: {verdict.detail}", flush=True)
            continue
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


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def check(corpus_root: Path, stage_names: list[str] | None = None, *, kind: str | None = None,
          requires: str | None = None, options: GradeOptions | None = None,
          names: list[str] | None = None, caught_by: bool = False) -> list[Verdict]:
    """Judge entries (as tests/test_corpus.py does) and print one line each; for scripts without pytest.
    With `caught_by`, only buggy entries, each graded with only its CAUGHT_BY test."""
    import copy
    verdicts = []
    for entry in entries(corpus_root, stage_names, names):
        if (kind and entry.kind != kind) or (requires and entry.requires != requires) or (
                caught_by and entry.kind != "buggy"):
            continue
        if entry.requires == "cuda" and not _cuda():
            print(f"skip {entry.name:48} REQUIRES: cuda", flush=True)
            continue
        judged = judge_caught_by if caught_by else judge
        verdict = judged(entry, copy.copy(options or GradeOptions()))
        verdicts.append(verdict)
        print(f"{'ok  ' if verdict.ok else 'FAIL'} {entry.name:48} {verdict.score:g}/{verdict.max_score:g}"
              + ("" if verdict.ok else f"\n     {verdict.detail[:2000]}"), flush=True)
    print(f"\n{sum(v.ok for v in verdicts)}/{len(verdicts)} entries behave")
    return verdicts


def main(argv: list[str] | None = None) -> int:
    import argparse

    from grader.engine.checks import PROVE_TOLERANCES
    os.environ.setdefault(PROVE_TOLERANCES, "1")   # proving the suites: their tolerance proofs too
    parser = argparse.ArgumentParser(prog="python -m grader.course.corpus", description=__doc__.split("\n")[0])
    parser.add_argument("corpus", nargs="?", default="tests/corpus", type=Path)
    parser.add_argument("--report", action="store_true", help="grade every buggy entry in full, print costs")
    parser.add_argument("--stage", action="append", help="only this stage (repeatable)")
    parser.add_argument("--entry", action="append",
                        help="only entries matching this <stage>/<name> glob (repeatable)")
    parser.add_argument("--why", action="store_true",
                        help="with --report: show the failing tests that do not name the bug, or lie outside PART")
    parser.add_argument("--kind", choices=["buggy", "correct"], help="without --report: only these entries")
    parser.add_argument("--requires", help="without --report: only entries with this REQUIRES (cuda)")
    parser.add_argument("--caught-by", action="store_true",
                        help="without --report: grade each buggy entry with only its CAUGHT_BY test")
    parser.add_argument("--to-patch", action="store_true",
                        help="turn the whole-file buggy entries (those --entry names) into patches")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    options = GradeOptions(device=args.device, call_timeout=10.0)
    if args.to_patch:
        from grader.course.corpus_convert import convert_all
        return convert_all(args.corpus, args.stage, args.entry, options)
    if args.report:
        verdicts = report(args.corpus, args.stage, options, why=args.why, names=args.entry)
        return 0 if all(meets_targets(v) for v in verdicts) else 1
    verdicts = check(args.corpus, args.stage, kind=args.kind, requires=args.requires, options=options,
                     names=args.entry, caught_by=args.caught_by)
    return 0 if verdicts and all(v.ok for v in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
