"""Stage fixtures as files of their stage (assignments/tests/fixtures_<stage>.py), loaded by
grader/worker/fixtures.py: each once, a clash or a broken file named when a fixture is asked for."""

import pytest

from grader.course import stages
from grader.worker import fixtures


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(fixtures, "_FACTORIES", {})
    monkeypatch.setattr(fixtures, "_LOADED", {})


def write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return str(path)


def test_the_course_declares_its_fixtures_per_stage():
    declared = {stages.Stage(name, "", 0, stages.project_root()).worker_fixtures.name
                for name in ("sampling", "tokenizer", "training")}
    assert {p.rsplit("/", 1)[-1] for p in fixtures.stage_files()} == declared


def test_a_stage_file_is_loaded_once_and_builds(tmp_path, clean_registry):
    path = write(tmp_path, "fixtures_toy.py", "loads = []\nloads.append(1)\n"
                 "class Box:\n    def __init__(self, v):\n        self.v = v\nFIXTURES = {'Box': Box}\n")
    fixtures.load([path, path])
    fixtures.load([path])
    import sys
    assert sys.modules["llmgrade_fixtures_toy"].loads == [1]
    assert fixtures.build("Box", [3], {}, load_missing=False).v == 3
    with pytest.raises(ValueError, match="unknown fixture 'Nope'"):
        fixtures.build("Nope", [], {}, load_missing=False)


def test_a_clash_or_a_broken_file_is_named(tmp_path, clean_registry):
    first = write(tmp_path, "fixtures_a.py", "FIXTURES = {'Box': dict}\n")
    clash = write(tmp_path, "fixtures_b.py", "FIXTURES = {'Box': list, 'Bag': list}\n")
    broken = write(tmp_path, "fixtures_c.py", "FIXTURES = {'Cup': undefined_name}\n")
    bare = write(tmp_path, "fixtures_d.py", "X = 1\n")
    fixtures.load([first, clash, broken, bare])
    assert fixtures.build("Box", [], {}, load_missing=False) == {}   # the first file's, not replaced
    with pytest.raises(ValueError) as error:
        fixtures.build("Bag", [], {}, load_missing=False)
    message = str(error.value)
    assert "fixtures_b.py: ValueError: fixture 'Box' is declared by another stage's file too" in message
    assert "fixtures_c.py: NameError" in message and "fixtures_d.py: TypeError: it declares no FIXTURES" in message


def test_a_stage_preload_is_imported_by_the_template_for_the_stages_it_grades(
        tmp_path, make_submission, session_for, monkeypatch):
    """fixtures_<stage>.py's PRELOAD: the template imports those modules at its start when its
    grading process grades that stage (or says nothing), else before it forks the stage's first
    worker, and never for a grading of other stages only."""
    from grader.worker import forks

    toy = write(tmp_path, "fixtures_toy.py", "FIXTURES = {}\nPRELOAD = ('tabnanny',)\n")
    monkeypatch.setattr(forks, "_fixture_files", lambda: [toy])
    folder = make_submission({"m.py": "import sys\n\ndef loaded(name):\n    return name in sys.modules\n"})

    def worker_has(stage: str) -> bool:
        session = session_for(folder, stage=stage)
        fn = session.request({"op": "ref", "target": session.request({"op": "import", "module": "m"}),
                              "name": "loaded"})
        return session.request({"op": "call", "target": fn, "args": ["tabnanny"], "kwargs": {}, "backward": None})

    def fresh_template(stages):   # a template of this test's own, with this fixture file
        monkeypatch.setattr(forks, "_template", None)
        forks.start_early(stages)

    try:
        fresh_template(["other"])
        assert worker_has("other") is False   # a grading of another stage: not imported
        assert worker_has("toy") is True      # imported before the stage's first worker
        assert worker_has("other") is True    # once, and every later fork shares it
        forks.running().close()
        for stages in (["toy"], None):        # a grading of that stage, or of any: at the start
            fresh_template(stages)
            assert worker_has("other") is True
            forks.running().close()
    finally:
        if forks.running():
            forks.running().close()
