"""What a grade depends on, as hashes: a re-run regrades a submission when any of them changed.

    key = grading_key(Path("subs/ada"), stages.select(["bigram"]))
    stale = why_stale(previous_results, key)     # None: still valid; else a reason in words

A grade depends on the submission's files, on the hidden tests (and the grader that
runs them) and on the stages chosen. Each is hashed with SHA-256 over file paths and
contents in sorted order, so the same tree gives the same hash on every machine.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import grader
from grader.course import stages as stages_module

KEY = "llmgrade_key"      # results.json's extra_data entry that records the key
_SKIPPED_PARTS = {"__pycache__", ".ipynb_checkpoints"}


def tree_hash(root: Path, pattern: str = "*") -> str:
    """SHA-256 over the relative path and bytes of every file under `root` (a file: its bytes)."""
    digest = hashlib.sha256()
    root = Path(root)
    if root.is_file():
        digest.update(root.read_bytes())
        return digest.hexdigest()
    for path in sorted(p for p in root.rglob(pattern) if p.is_file()):
        rel = path.relative_to(root)
        if _SKIPPED_PARTS.intersection(rel.parts) or any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(rel.as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def submission_hash(path: Path) -> str:
    """The submission's content: a folder's files, or a zip's members (not the zip's own bytes,
    which change with timestamps when the same files are zipped again)."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        digest = hashlib.sha256()
        try:
            with zipfile.ZipFile(path) as archive:
                for info in sorted(archive.infolist(), key=lambda i: i.filename):
                    digest.update(info.filename.encode() + b"\0" + info.CRC.to_bytes(4, "big")
                                  + info.file_size.to_bytes(8, "big"))
        except (zipfile.BadZipFile, OSError):
            return tree_hash(path)
        return digest.hexdigest()
    return tree_hash(path)


def tests_hash(chosen: list[stages_module.Stage]) -> str:
    """The hidden tests of the chosen stages and the grader package that runs them."""
    digest = hashlib.sha256()
    for stage in chosen:
        digest.update(stage.name.encode() + b"\0" + tree_hash(stage.hidden_tests).encode())
    digest.update(tree_hash(Path(grader.__file__).parent, "*.py").encode())
    return digest.hexdigest()


def grading_key(submission: Path, chosen: list[stages_module.Stage]) -> dict:
    return {"submission": submission_hash(submission), "tests": tests_hash(chosen),
            "stages": sorted(s.name for s in chosen)}


def why_stale(results: dict, key: dict) -> str | None:
    """None when `results` was graded under this very key; otherwise why it must be graded again."""
    recorded = (results.get("extra_data") or {}).get(KEY)
    if not isinstance(recorded, dict):
        return "its results.json records no grading key (graded by an older llmgrade)"
    if recorded.get("submission") != key["submission"]:
        return "the submission changed since it was graded"
    if recorded.get("tests") != key["tests"]:
        return "the hidden tests or the grader changed since it was graded"
    if not set(key["stages"]) <= set(recorded.get("stages") or ()):
        missing = sorted(set(key["stages"]) - set(recorded.get("stages") or ()))
        return f"it was not graded for {', '.join(missing)}"
    return None
