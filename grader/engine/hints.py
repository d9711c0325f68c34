"""One-line hints under a student's exception, for error messages whose cause is known.

    add_hint(r"max\\(\\) arg is an empty sequence", "no pair is left to merge: stop early",
             type_name="ValueError")

A hidden suite's checks module registers hints for its stage at import; the
registration remembers the stage (the suite's folder name) and the hint is given
only for exceptions raised in that stage's module. The hints below, registered
here, are general PyTorch and Python mistakes and apply everywhere.

`hint_for(type_name, message, traceback)` returns the first matching hint. The
student's traceback holds only frames of the submission's own files, so the
stage a hint belongs to is seen in it ("tokenizer.py", line 42).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Hint:
    pattern: re.Pattern
    text: str
    type_name: str | None = None
    stage: str | None = None       # None: any stage

    def matches(self, type_name: str | None, message: str, where: str) -> bool:
        if self.type_name is not None and self.type_name != type_name:
            return False
        if self.stage is not None and f"{self.stage}.py" not in where and not where.startswith(self.stage):
            return False
        return self.pattern.search(message) is not None


_HINTS: list[Hint] = []


def add_hint(pattern: str, hint: str, *, type_name: str | None = None) -> None:
    """Give `hint` under a student exception whose message matches `pattern` (a regex).

    Called from `autograder_tests/<stage>/...`, the hint is for that stage only.
    Registering the same hint twice (a module imported again) keeps one copy.
    """
    caller = Path(sys._getframe(1).f_code.co_filename).resolve()   # not inspect.stack(): it reads every frame's source
    stage = None if caller.parent == Path(__file__).resolve().parent else caller.parent.name
    entry = Hint(re.compile(pattern), hint, type_name, stage)
    if entry not in _HINTS:
        _HINTS.append(entry)


def hint_for(type_name: str | None, message: str, traceback: str = "", what: str = "") -> str | None:
    """The first hint whose pattern matches; stage hints (more specific) before general ones."""
    where = f"{what}\n{traceback}"
    for only_stages in (True, False):
        for hint in _HINTS:
            if (hint.stage is not None) == only_stages and hint.matches(type_name, message, where):
                return hint.text
    return None


# ---- general mistakes ------------------------------------------------------------------------
# The messages are PyTorch's and CPython's own (torch 2.x, Python 3.10+).

add_hint(r"Expected all tensors to be on the same device",
         "a tensor was made on another device: create new tensors with device=x.device "
         "(see the contract's \"Devices and dtypes\")")
add_hint(r"expected (scalar type|m1 and m2 to have the same dtype|both vectors to have same dtype)"
         r"|result type \w+ can't be cast|found dtype \w+ but expected",
         "two tensors of different dtypes met: keep the input's dtype (dtype=x.dtype) "
         "instead of a fixed float32 or float64")
add_hint(r"mat1 and mat2 shapes cannot be multiplied|size mismatch",
         "a matrix product got shapes that do not line up: print the shapes just before it "
         "and compare them with the docstring's")
add_hint(r"The size of tensor a \(\d+\) must match the size of tensor b",
         "two shapes do not broadcast: after a reduction, keepdim=True keeps the reduced axis")
add_hint(r"index out of range in self",
         "an index is past the end of a table (or negative): ids must be in [0, vocab_size)")
add_hint(r"view size is not compatible with input tensor's size and stride",
         "after a transpose, use .reshape(...) or .contiguous().view(...)")
add_hint(r"does not require grad and does not have a grad_fn",
         "the result was cut off from the graph (.detach(), .item(), torch.tensor(a_tensor), "
         "torch.no_grad() or .data): keep it a tensor computed from the inputs")
add_hint(r"modified by an inplace operation",
         "an in-place operation (+=, x[...] = ..., a method ending in _) changed a tensor that "
         "autograd still needs: use the out-of-place form")
add_hint(r"can't convert cuda.* to numpy|Can't call numpy\(\) on Tensor that requires grad",
         "numpy() needs a CPU tensor without grad: stay in torch")
add_hint(r"'NoneType' object (is not subscriptable|is not iterable|has no attribute)",
         "something is None: a function that should return a value is missing its `return`",
         type_name="TypeError")
add_hint(r"'NoneType' object has no attribute",
         "something is None: a function that should return a value is missing its `return`",
         type_name="AttributeError")
add_hint(r"maximum recursion depth exceeded",
         "a function calls itself without end (or a property or __getattr__ reads itself)")
add_hint(r"CUDA out of memory|can't allocate memory|DefaultCPUAllocator",
         "the code asked for more memory than the grader allows: avoid building (T, T, ...) or "
         "(vocab, vocab, ...) tensors where a smaller one does")
add_hint(r"\[Errno 27\] File too large",
         "your code printed or wrote more than the grader's output limit (16 MiB per worker, "
         "set in grader/worker/sandbox.py): print less, e.g. not inside a loop over every token")
