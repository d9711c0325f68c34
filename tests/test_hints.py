"""A student's exception reads as their own file and line, plus a hint when the cause is known."""

import importlib.util

from grader.engine.hints import hint_for
from grader.engine.remote import StudentCodeError
from grader.worker.client import StudentException

TRACE = ('  File "tokenizer.py", line 30, in train_bpe\n    pair = best_pair(stats)\n'
         '  File "tokenizer.py", line 12, in best_pair\n    return max(stats, key=stats.get)\n')


def error(type_name, message, trace=TRACE, what="tokenizer.train_bpe(...)"):
    return str(StudentCodeError(what, StudentException(type_name, [type_name, "Exception"], message, trace)))


def test_the_innermost_student_line_comes_first_and_the_trace_follows():
    text = error("KeyError", "'z'")
    lines = text.splitlines()
    assert lines[0] == "tokenizer.train_bpe(...) raised KeyError: 'z'"
    assert lines[1] == "  at tokenizer.py, line 12, in best_pair: return max(stats, key=stats.get)"
    assert "Traceback (your files only):" in text and "line 30, in train_bpe" in text


def test_one_frame_is_not_repeated_as_a_traceback():
    one = '  File "bigram.py", line 4, in nll\n    return total / count\n'
    text = error("ZeroDivisionError", "division by zero", one, "bigram.nll(...)")
    assert "at bigram.py, line 4, in nll: return total / count" in text
    assert "Traceback" not in text


def test_a_general_pytorch_hint_is_given_in_any_stage():
    text = error("RuntimeError", "Expected all tensors to be on the same device, but found at least two "
                 "devices, cuda:0 and cpu!", '  File "attention.py", line 9, in f\n    x @ y\n',
                 "attention.f(...)")
    assert "hint: a tensor was made on another device" in text


def test_no_hint_for_an_unknown_message():
    assert "hint:" not in error("ValueError", "something only this student does")


def test_a_stage_hint_applies_only_to_its_stage(tmp_path):
    """Registered from autograder_tests/<stage>/..., a hint is scoped to that stage's module."""
    suite = tmp_path / "autograder_tests" / "toystage"
    suite.mkdir(parents=True)
    (suite / "toy_checks.py").write_text(
        "from grader.engine.hints import add_hint\n"
        "add_hint(r'toy pattern \\d+', 'the toy hint', type_name='ValueError')\n")
    spec = importlib.util.spec_from_file_location("toy_checks", suite / "toy_checks.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    toy = '  File "toystage.py", line 3, in f\n    raise ValueError\n'
    other = '  File "bigram.py", line 3, in f\n    raise ValueError\n'
    assert hint_for("ValueError", "toy pattern 7", toy) == "the toy hint"
    assert hint_for("ValueError", "toy pattern 7", other) is None
    assert hint_for("KeyError", "toy pattern 7", toy) is None
