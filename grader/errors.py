"""The errors grader code raises for a person to act on, and the exit codes of `llmgrade`.

Library code raises these (never click's exceptions); the command line prints their message as
one line and exits with their `exit_code`:

    0  done (grade, grade-all: grading completed, whatever the score)
    1  a test failed or problems were found (check, submit, selfcheck), or a GraderError
    2  bad usage: a wrong argument, an option out of range, a command run in the wrong place
    3  internal error: a bug of ours (the message says where the traceback went)
"""

from __future__ import annotations

OK, PROBLEMS, USAGE, INTERNAL = 0, 1, 2, 3


class GraderError(Exception):
    """Something the user can fix, said in one line."""

    exit_code = PROBLEMS


class UsageProblem(GraderError):
    """A command used where or how it cannot work (the hidden tests asked for in a student bundle)."""

    exit_code = USAGE
