"""docs/slurm.md's recipe, run for real on a private one-node Slurm (tests/slurm_cluster.py).

The job script and the submit commands are the doc's two code blocks, with only the paths and the
sizes replaced (each replaced text must still be in the doc, so the doc cannot drift from what
ran): an array of 2 `grade-all --shard` tasks over four bigram submissions, then the dependent
`llmgrade gradebook` job. The merged gradebook has one row per submission, with its score or error.

Needs munge and Slurm (Debian: `apt-get install -y slurmd slurmctld munge slurm-client`) and root;
skipped otherwise, with that reason.
"""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.course import corpus
from grader.course.stages import project_root
from slurm_cluster import SlurmCluster, missing_reason

ROOT = project_root()
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# doc text -> what the test runs instead ({tmp}, {venv} filled in below)
SCRIPT_EDITS = {
    "#SBATCH --array=1-8 ": "#SBATCH --array=1-2 ",
    "#SBATCH --cpus-per-task=2": "#SBATCH --cpus-per-task=1",   # both shards at once on the 2-CPU node
    "#SBATCH --mem=8G": "#SBATCH --mem=1G",
    "source ~/llmgrade/.venv/bin/activate": "source {venv}/bin/activate",
    "/scratch/$USER/": "{tmp}/",
}
SUBMIT_EDITS = {"source ~/llmgrade/.venv/bin/activate": "source {venv}/bin/activate", "/scratch/$USER/": "{tmp}/"}


def doc_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", (ROOT / "docs/slurm.md").read_text(encoding="utf-8"), re.S)


def edited(text: str, edits: dict[str, str], **values) -> str:
    for old, new in edits.items():
        assert old in text, f"docs/slurm.md no longer has {old!r}: update tests/test_slurm.py with it"
        text = text.replace(old, new.format(**values))
    return text


def venv_with_llmgrade(tmp: Path) -> Path:
    """This interpreter's venv when it has the `llmgrade` script (CI's .venv), else a stand-in
    whose bin/activate puts a `python -m grader` wrapper on PATH."""
    prefix = Path(sys.prefix)
    if (prefix / "bin/activate").exists() and (prefix / "bin/llmgrade").exists():
        return prefix
    venv = tmp / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/activate").write_text(f'export PATH="{venv}/bin:$PATH"\n')
    wrapper = venv / "bin/llmgrade"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m grader "$@"\n')
    wrapper.chmod(0o755)
    return venv


def path_without_llmgrade() -> str:
    """PATH minus the folders holding `llmgrade`: the doc's commands must activate the venv themselves."""
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and not Path(p, "llmgrade").exists())


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


def test_the_docs_recipe_grades_every_submission_once(cluster, tmp_path):
    subs = tmp_path / "submissions"
    for name in ("ada", "bob", "carl", "dan"):
        (subs / name).mkdir(parents=True)
    shutil.copy(ROOT / "solutions/bigram.py", subs / "ada/bigram.py")
    (subs / "bob/bigram.py").write_text(corpus.module_text("bigram", "nll_sum"))
    (subs / "carl/bigram.py").write_text("def bigram_counts(words:\n")          # a syntax error
    (subs / "dan/bigram.py").write_text("import os\nos._exit(3)\n")             # kills its worker
    script_block, submit_block = doc_blocks()[:2]
    venv = venv_with_llmgrade(tmp_path)
    script = edited(script_block, SCRIPT_EDITS, tmp=tmp_path, venv=venv)
    assert "--device cpu" in script
    script = script.replace("--device cpu", "--device cpu --stage bigram")
    (tmp_path / "grade.sbatch").write_text(script)
    submit = edited(submit_block, SUBMIT_EDITS, tmp=tmp_path, venv=venv)
    env = dict(cluster.env, PATH=path_without_llmgrade())
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", submit], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    cluster.wait_for(cluster.queue_is_empty, "the array and the merge job", 600)

    out = tmp_path / "graded"
    logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
    # one log per array task (one job id), then the merge job's
    assert re.fullmatch(r"grade-(\d+)_1\.out grade-\1_2\.out gradebook-\d+\.out", " ".join(logs)), logs
    logs = logs[:2]
    shard_logs = "\n".join((tmp_path / "logs" / name).read_text() for name in logs)
    assert [r["id"] for r in read_csv(out / "gradebook-shard-1-of-2.csv")] == ["ada", "carl"], shard_logs
    assert [r["id"] for r in read_csv(out / "gradebook-shard-2-of-2.csv")] == ["bob", "dan"], shard_logs
    assert (out / "gradebook.csv").exists(), "the merge job wrote nothing:\n" + \
        "".join(p.read_text() for p in (tmp_path / "logs").glob("gradebook-*.out"))
    rows = {row["id"]: row for row in read_csv(out / "gradebook.csv")}
    assert list(rows) == ["ada", "bob", "carl", "dan"]
    ada, bob, carl, dan = rows.values()
    assert ada["error"] == "" and float(ada["total"]) == float(ada["max_total"]) > 0
    assert bob["error"] == "" and 0 < float(bob["total"]) < float(ada["total"])
    assert float(carl["total"] or 0) == 0 and float(dan["total"] or 0) == 0
    assert "SyntaxError" in carl["error"] and "exit code 3" in dan["error"]
    assert "looks like the NLL is summed" in (out / "bob/feedback.html").read_text()
