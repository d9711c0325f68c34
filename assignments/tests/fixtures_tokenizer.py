"""The tokenizer stage's fixtures: objects its tests build inside the worker and pass to your code.

`student.tokenizer.Tokenizer(student.fixture("gpt2_ranks"), GPT2_PATTERN, ...)` in a test hands
your Tokenizer GPT-2's 50,256 ranks without sending them: the process that runs your code loaded
them before it started (from the same sha256-checked files as `grader.testing.gpt2_ranks()`).
"""

from grader.testing import gpt2_ranks

gpt2_ranks()   # loaded once where this file is loaded (0.2 s), shared by every worker after


def gpt2_ranks_copy() -> dict[bytes, int]:
    """A dict of its own for each Tokenizer (one may keep or change what it is given)."""
    return dict(gpt2_ranks())


FIXTURES = {"gpt2_ranks": gpt2_ranks_copy}
