"""Banned APIs: found in the source (grader/banned.py) and trapped in the worker (worker/traps.py)."""

import pytest

from grader.banned import expect_no_banned_apis, find_banned_apis
from grader.checks import CheckFailure
from grader.remote import RemoteSubmission, StudentCodeError

BANNED = ("torch.nn.functional.softmax", "torch.nn.functional.log_softmax", "torch.softmax",
          "torch.Tensor.softmax", "torch.Tensor.log_softmax", "torch.logsumexp",
          "torch.special.softmax", "torch.nn.CrossEntropyLoss", "torch.nn.Transformer*")

CLEAN = '''
import torch
from torch import nn

def softmax(x, dim=-1):
    """Not F.softmax: the word in a docstring or # comment is not a call."""
    e = (x - x.amax(dim, keepdim=True)).exp()
    return e / e.sum(dim, keepdim=True)

class Head(nn.Module):
    def softmax(self, x):                # the student's own method
        return softmax(x)

    def forward(self, x):
        return self.softmax(x) + torch.log(x.exp().sum(-1, keepdim=True))
'''


def uses(folder, module="m"):
    return [(f.file, f.line, f.api) for f in find_banned_apis(folder, module, BANNED)]


def test_clean_source_has_no_findings(make_submission):
    folder = make_submission({"m.py": CLEAN})
    assert uses(folder) == []
    expect_no_banned_apis(folder, "m", BANNED)


@pytest.mark.parametrize("source, api", [
    ("import torch.nn.functional as F\ny = F.softmax(x, -1)", "torch.nn.functional.softmax"),
    ("import torch\ny = torch.nn.functional.log_softmax(x, -1)", "torch.nn.functional.log_softmax"),
    ("from torch import nn\ny = nn.functional.softmax(x, -1)", "torch.nn.functional.softmax"),
    ("from torch.nn.functional import softmax as sm\ny = sm(x)", "torch.nn.functional.softmax"),
    ("import torch\nsm = torch.softmax\ny = sm(x, -1)", "torch.softmax"),
    ("import torch\ny = getattr(torch, 'logsumexp')(x, -1)", "torch.logsumexp"),
    ("y = x.log_softmax(-1)", "torch.Tensor.log_softmax"),
    ("import torch\ny = torch.special.softmax(x, -1)", "torch.special.softmax"),
    ("from torch.nn.modules.loss import CrossEntropyLoss\nloss = CrossEntropyLoss()", "torch.nn.CrossEntropyLoss"),
    ("import torch.nn as nn\nclass L(nn.CrossEntropyLoss):\n    pass", "torch.nn.CrossEntropyLoss"),
    ("import torch\nlayer = torch.nn.TransformerEncoderLayer(8, 2)", "torch.nn.TransformerEncoderLayer"),
])
def test_each_way_of_writing_a_banned_call_is_found(make_submission, source, api):
    folder = make_submission({"m.py": "x = None\n" + source + "\n"})
    found = uses(folder)
    assert found and found[0][0] == "m.py" and found[0][2] == api, found


def test_banned_call_in_a_helper_module_counts(make_submission):
    folder = make_submission({
        "m.py": "import helpers\nfrom util.maths import norm\n\ndef f(x):\n    return helpers.probs(x)\n",
        "helpers.py": "import torch.nn.functional as F\n\ndef probs(x):\n    return F.softmax(x, -1)\n",
        "util/__init__.py": "",
        "util/maths.py": "def norm(x):\n    return x.softmax(0)\n",
        "unrelated.py": "import torch\ny = torch.softmax\n",   # not imported by m: not scanned
    })
    assert uses(folder) == [("helpers.py", 4, "torch.nn.functional.softmax"),
                            ("util/maths.py", 2, "torch.Tensor.softmax")]


def test_feedback_names_file_line_and_api(make_submission):
    folder = make_submission({"m.py": "import torch.nn.functional as F\n\n\ndef f(x):\n    return F.softmax(x, -1)\n"})
    with pytest.raises(CheckFailure) as failure:
        expect_no_banned_apis(folder, "m", BANNED)
    assert "m.py, line 5: F.softmax is not allowed in this stage" in str(failure.value)


def test_missing_or_broken_module(make_submission):
    folder = make_submission({"m.py": "def f(:\n"})
    assert uses(folder) == []                       # the import test reports the syntax error
    with pytest.raises(CheckFailure, match="missing"):
        expect_no_banned_apis(folder, "other", BANNED)


# ---- the worker's traps --------------------------------------------------------

TRAPPED = '''
import torch
import torch.nn.functional as F
from torch.nn.functional import softmax as taken_at_import

def library(x):
    return F.softmax(x, -1)

def alias(x):
    return taken_at_import(x, -1)

def method(x):
    return x.softmax(-1)

def loss():
    class Mine(torch.nn.CrossEntropyLoss):
        pass
    return Mine()

def allowed(x):
    return torch.exp(x).sum() + F.gelu(x).sum(), list(torch.nn.Linear(2, 3)(x).shape)
'''


@pytest.mark.parametrize("function", ["library", "alias", "method", "loss"])
def test_worker_traps_banned_calls(make_submission, session_for, function):
    import torch

    remote = RemoteSubmission(session_for(make_submission({"trapped.py": TRAPPED})), banned_apis=BANNED)
    with pytest.raises(StudentCodeError) as failure:
        fn = getattr(remote.trapped, function)
        fn() if function == "loss" else fn(torch.ones(2, 2))
    assert failure.value.is_a("BannedAPIError")
    assert "is not allowed in this stage" in str(failure.value)


def test_worker_traps_leave_other_calls_alone_and_survive_a_restart(make_submission, session_for):
    import torch

    session = session_for(make_submission({"trapped.py": TRAPPED + "\ndef die():\n    import os; os._exit(1)\n"}))
    remote = RemoteSubmission(session, banned_apis=BANNED)
    x = torch.ones(2, 2)
    value, shape = remote.trapped.allowed(x)
    assert torch.equal(value, torch.exp(x).sum() + torch.nn.functional.gelu(x).sum()) and shape == [2, 3]
    with pytest.raises(StudentCodeError):
        remote.trapped.die()
    with pytest.raises(StudentCodeError) as failure:   # a fresh worker: trapped again before the import
        remote.trapped.library(torch.ones(2))
    assert failure.value.is_a("BannedAPIError")


def test_without_a_banned_list_nothing_is_trapped(make_submission, session_for):
    import torch

    remote = RemoteSubmission(session_for(make_submission({"trapped.py": TRAPPED})))
    assert remote.trapped.library(torch.zeros(4)).tolist() == [0.25] * 4


def test_apis_outside_torch_can_be_banned(make_submission):
    banned = ("tiktoken.Encoding", "tiktoken.get_encoding")
    folder = make_submission({"m.py": "import tiktoken\nfrom tiktoken import Encoding as E\n"
                                      "enc = tiktoken.get_encoding('gpt2')\nx = E\nget = tiktoken.get_encoding\n"})
    found = [(f.line, f.api) for f in find_banned_apis(folder, "m", banned)]
    assert found == [(3, "tiktoken.get_encoding"), (4, "tiktoken.Encoding"), (5, "tiktoken.get_encoding")]


def test_a_glob_names_public_objects_only():
    from grader.worker import traps

    names = [full for _, _, full in traps.resolve("torch.nn.Transformer*")]
    assert "torch.nn.TransformerEncoderLayer" in names
    assert all(not n.rsplit(".", 1)[1].startswith("__") for n in traps.resolve("torch.nn.*") for n in [n[2]])
    assert "torch.nn.functional" not in [n for _, _, n in traps.resolve("torch.nn.*")]   # a submodule
