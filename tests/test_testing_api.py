"""grader.testing is the one import of hidden and public tests: every name it exports exists (and is
the defining module's own object), test files import nothing else from grader, the seeded makers
give the numbers the suites were written with, and the type/shape checks say what is wrong."""

import ast
import inspect
from pathlib import Path

import pytest
import torch

from grader.engine import checks, pytest_plugin
import grader.testing as testing
from grader.testing import CheckFailure, expect_sequence, expect_tensor, expect_type, randint, randn, seeded

ROOT = Path(__file__).resolve().parents[1]


def suite_files() -> list[Path]:
    """The hidden suites with their helper modules, and the public tests."""
    return sorted((ROOT / "autograder_tests").rglob("*.py")) + sorted((ROOT / "assignments" / "tests").glob("*.py"))




def grader_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of each import of a grader module other than grader.testing, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            package = (ROOT / node.module.replace(".", "/")).is_dir()   # grader, grader.engine: name its modules
            modules = [f"{node.module}.{a.name}" for a in node.names] if package else [node.module]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, m) for m in modules
                  if (m == "grader" or m.startswith("grader.")) and m != "grader.testing"]
    return found


def test_test_files_import_from_grader_testing_only():
    files = suite_files()
    assert len(files) > 30   # the scan has something to read
    offenders = [f"{path.relative_to(ROOT)}:{line}: imports {module}"
                 for path in files for line, module in grader_imports(path.read_text(encoding="utf-8"))]
    assert not offenders, "import these from grader.testing instead:\n" + "\n".join(offenders)


def test_the_import_scan_can_fail():
    source = ("from grader.testing import expect_close\n"
              "from grader.engine.checks import CheckFailure\n"
              "import grader.engine.remote\n"
              "from grader.engine import timing\n"
              "def f():\n    from grader.engine.banned import expect_no_banned_apis\n")
    assert grader_imports(source) == [(2, "grader.engine.checks"), (3, "grader.engine.remote"), (4, "grader.engine.timing"),
                                      (6, "grader.engine.banned")]


def test_all_names_exist_once():
    assert len(testing.__all__) == len(set(testing.__all__))
    missing = [name for name in testing.__all__ if not hasattr(testing, name)]
    assert not missing, f"grader.testing.__all__ names what it does not define: {missing}"
    public = {name for name, value in vars(testing).items()
              if not name.startswith("_") and not inspect.ismodule(value)
              and getattr(value, "__module__", "grader.testing") != "__future__"}
    unexported = public - set(testing.__all__) - {"annotations", "torch"}
    assert not unexported, f"public names of grader.testing missing from __all__: {sorted(unexported)}"


def test_reexports_are_the_defining_modules_objects():
    """Re-exported, not copied: a fix in grader.engine.checks reaches the tests."""
    for name in testing.__all__:
        value = getattr(testing, name)
        home = getattr(value, "__module__", None)
        if callable(value) and home and home.startswith("grader.") and home != "grader.testing":
            import importlib

            defining = importlib.import_module(home)
            attribute = "build" if name == "build_fixture" else name
            assert getattr(defining, attribute) is value, name
    assert testing.expect_close is checks.expect_close and testing.CheckFailure is checks.CheckFailure


def test_documented_fixtures_and_markers_are_the_plugins():
    fixtures = {name for name, value in vars(pytest_plugin.GradingSession).items()
                if "fixture" in type(value).__name__.lower() or hasattr(value, "_fixture_function_marker")
                or hasattr(value, "_pytestfixturefunction")}
    # `device` is parametrized by the plugin (pytest_generate_tests), not a fixture function
    assert set(testing.FIXTURES) - {"device"} == fixtures, fixtures
    source = inspect.getsource(pytest_plugin.pytest_configure)
    for marker in testing.MARKERS:
        assert f'"{marker}"' in source, marker


# ---- the seeded makers ----------------------------------------------------------------------

def test_randn_is_the_float64_draw_cast():
    draw = torch.randn(2, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.equal(randn(2, 3, seed=5), draw.float())
    assert torch.equal(randn((2, 3), seed=5, dtype=torch.float64, scale=1.5, shift=-0.25), -0.25 + 1.5 * draw)
    assert randn(4, seed=1, device="cpu").dtype == torch.float32
    assert not torch.equal(randn(4, seed=1), randn(4, seed=2))


def test_randint_and_seeded():
    ids = randint(2, 5, high=7, seed=3)
    assert ids.dtype == torch.int64 and tuple(ids.shape) == (2, 5) and ids.min() >= 0 and ids.max() < 7
    assert torch.equal(ids, torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(3)))
    assert torch.equal(randint((2, 5), high=7, seed=3), ids)
    assert torch.equal(torch.rand(3, generator=seeded(9)), torch.rand(3, generator=seeded(9)))


# ---- the type and shape checks ----------------------------------------------------------------

def test_expect_tensor():
    x = torch.zeros(2, 3)
    assert expect_tensor(x, what="f(x)", shape=(2, 3), dtype=torch.float32, device="cpu") is x
    with pytest.raises(CheckFailure, match=r"^f\(x\): expected a tensor of shape \(2, 3\), got a list$"):
        expect_tensor([0.0], what="f(x)", shape=(2, 3))
    with pytest.raises(CheckFailure, match=r"expected a torch.int64 tensor of shape \(2, 3\), "
                                           r"got a torch.float32 tensor of shape \(2, 3\) on cpu"):
        expect_tensor(x, what="f(x)", shape=(2, 3), dtype=torch.int64)
    with pytest.raises(CheckFailure, match=r"of shape \(3, 2\), got a torch.float32 tensor of shape \(2, 3\)"):
        expect_tensor(x, what="f(x)", shape=torch.Size([3, 2]))
    with pytest.raises(CheckFailure, match="expected a tensor on cuda, got"):
        expect_tensor(x, what="f(x)", device="cuda")


def test_expect_sequence():
    pair = (torch.zeros(1), torch.ones(1))
    assert expect_sequence(pair, ("output", "weights"), what="sdpa") is pair
    assert expect_sequence(list(pair), ("output", "weights"), what="sdpa") == list(pair)
    with pytest.raises(CheckFailure, match=r"^sdpa: must return a tuple \(output, weights\), got a torch"):
        expect_sequence(torch.zeros(2), ("output", "weights"), what="sdpa")
    with pytest.raises(CheckFailure, match=r"got a tuple of 3 items$"):
        expect_sequence((1, 2, 3), ("x", "y"), what="get_batch")
    with pytest.raises(CheckFailure, match=r"must return a tuple \(logits, loss\), got a list of 2 items"):
        expect_sequence([1, 2], ("logits", "loss"), what="GPT(...)(idx)", types=(tuple,))


def test_expect_type():
    assert expect_type({}, dict, what="train(...)") == {}
    with pytest.raises(CheckFailure, match=r"^train\(\.\.\.\): expected a dict, got a list$"):
        expect_type([], dict, what="train(...)")
    with pytest.raises(CheckFailure, match="expected an int or a float, got None"):
        expect_type(None, (int, float), what="g")
