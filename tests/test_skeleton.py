"""Skeletons are generated from the references and must not drift."""

import ast

import pytest

from grader.course import skeleton, stages


def test_committed_skeletons_match_their_references():
    stale = skeleton.drifted()
    assert not stale, f"regenerate with `llmgrade sync`: {[str(s.skeleton) for s in stale]}"


@pytest.mark.parametrize("stage", stages.discover(), ids=lambda s: s.name)
def test_skeleton_keeps_the_api_and_drops_the_solution(stage):
    reference = ast.parse(stage.solution.read_text())
    skel_source = stage.skeleton.read_text()
    skel = ast.parse(skel_source)
    names = lambda tree: sorted(n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)))  # noqa: E731
    assert names(skel) == names(reference)
    assert "BEGIN SOLUTION" not in skel_source and "END SOLUTION" not in skel_source
    assert skel_source.count("raise NotImplementedError") >= len(names(reference))


def test_markers_replace_blocks_and_stubs():
    source = (
        "X = 1\n"
        "# BEGIN SOLUTION stub: PATTERN = ''  # TODO\n"
        "PATTERN = r'\\w+'\n"
        "# END SOLUTION\n"
        "def f(x):\n"
        "    '''doc'''\n"
        "    # BEGIN SOLUTION\n"
        "    return x + 1\n"
        "    # END SOLUTION\n"
    )
    out = skeleton.make_skeleton(source)
    assert "PATTERN = ''  # TODO" in out and "\\w+" not in out and "x + 1" not in out
    assert "    # TODO: your code here\n    raise NotImplementedError\n" in out and "X = 1" in out
    ast.parse(out)


@pytest.mark.parametrize("source", [
    "# BEGIN SOLUTION\nx = 1\n",
    "x = 1\n# END SOLUTION\n",
    "# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n",
])
def test_unbalanced_markers_are_errors(source):
    with pytest.raises(skeleton.MarkerError):
        skeleton.make_skeleton(source)
