"""Fast checks of the hostile harness itself (no grading): the fast lane runs these."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from grader.worker import identity

from . import harness
from .routes import ROUTES, hostile_source


def test_every_route_is_a_valid_module_with_its_paths_filled_in(tmp_path):
    skeleton = (harness.REPO / "assignments" / "bigram.py").read_text()
    for route in ROUTES:
        text = hostile_source(skeleton, route, REF="/x/solutions/bigram.py", RESULTS="/o/r/results.json",
                              SUBS="/s", SID=route, MARK="hxmark-t", OTHER="/y/solutions/bigram.py",
                              PLANTS=[("/p.pth", "x")])
        compile(text, f"{route}.py", "exec")
        assert "$" not in text.split("# ---- hostile code")[1].replace("$$", ""), route


def test_each_level_grades_every_route_once_in_few_batches():
    for level in ("full", "container"):
        assert len(harness.plan(level)) == 1
    batches = harness.plan("user")
    ids = [sid for batch in batches for sid in batch]
    assert len(ids) == len(set(ids)) and "r13_fork_bomb" not in ids and len(batches) == 4


def test_namespace_script_makes_cgroups_read_only_and_exposes_the_runtime(tmp_path):
    script = harness.namespace_script(tmp_path)
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            if line.split()[1].startswith("/sys/fs/cgroup/"):
                assert f"remount,bind,ro '{line.split()[1]}'" in script
    for ancestor, children in harness._blocked_ancestors().items():
        assert f"mode=0711 tmpfs '{ancestor}'" in script
        assert all(child.startswith(ancestor + "/") for child in children)
    if not harness._blocked_ancestors():
        assert "tmpfs" not in script


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make files of a pool uid")
def test_sweep_reaches_world_writable_folders_inside_shared_ones(tmp_path, monkeypatch):
    """A worker uid can write into /tmp/.X11-unix (1777) as well as /tmp: both are swept."""
    uid = identity.FIRST_UID + identity.POOL_SIZE - 1
    shared = tmp_path / "shared"
    inner = shared / "x11"
    inner.mkdir(parents=True)
    os.chmod(shared, 0o1777)
    os.chmod(inner, 0o1777)
    private = shared / "private"
    private.mkdir(mode=0o755)
    made = [shared / "top", inner / "nested", private / "not-theirs"]
    for path in made:
        path.write_text("x")
    for path in made[:2]:
        os.lchown(path, uid, uid)
    monkeypatch.setattr(identity, "SHARED_WRITABLE", (str(shared),))
    removed = identity.sweep_files(uid)
    assert sorted(removed) == sorted(str(p) for p in made[:2])
    assert (private / "not-theirs").exists()
