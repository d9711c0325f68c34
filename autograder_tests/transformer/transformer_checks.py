"""Shared pieces of the `transformer` hidden tests (not a test file).

The reference modules are built here, in the grading process, from a fixed seed
(and with their layer norms' weight and bias moved away from ones and zeros, so
that a missing scale or shift shows). The student's module of the same class is
built in the worker, checked for the contract's state-dict keys, loaded with the
reference's weights and put in eval mode. Expected values come from a float64
copy of the reference; each known mistake is written as what it would produce
for the same weights and inputs.
"""

from __future__ import annotations

import copy
import torch
from torch.nn import functional as F

from grader.testing import CheckFailure, add_hint, backward, expect_close, expect_type

# The hidden tests' GPT: small, so that every call finishes in milliseconds.
VOCAB, BLOCK, D_MODEL, LAYERS, HEADS = 50, 16, 32, 2, 4

# In this stage a tensor left on the CPU is most often a module attribute that is not an nn.Parameter
# (LayerNorm's weight = torch.ones(d)): .to(device) moves parameters and buffers only.
add_hint(r"Expected all tensors to be on the same device",
         "a tensor is on another device: a tensor attribute that is not an nn.Parameter (or a buffer) stays "
         "on the CPU when the module is moved with .to(device), and a new tensor needs device=x.device")


# ---- building modules -----------------------------------------------------------

def build_reference(reference, cls: str, *args, seed: int, emb_std: float = 0.3, **kwargs):
    """The reference's `cls`(*args, **kwargs) on the CPU, its weights fixed by `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = getattr(reference, cls)(*args, **kwargs)
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, reference.LayerNorm):
                sub.weight.copy_(1.0 + 0.3 * torch.randn(sub.weight.shape, generator=g))
                if sub.bias is not None:
                    sub.bias.copy_(0.3 * torch.randn(sub.bias.shape, generator=g))
            if isinstance(sub, (reference.TokenEmbedding, reference.PositionalEmbedding)):
                sub.weight.copy_(emb_std * torch.randn(sub.weight.shape, generator=g))
    return module.eval()


def float64_copy(module, device: str):
    return copy.deepcopy(module).double().to(device).eval()


def plain_tensors(module, names) -> dict:
    """{name: value} for the state-dict names (e.g. "blocks.0.ln1.weight") that `module` holds as
    plain tensor attributes, read back as data: a tensor attribute missing from state_dict is
    neither an nn.Parameter nor a buffer (the classic `self.weight = torch.ones(d)`)."""
    found, objects = {}, {"": module}
    for name in sorted(names):
        prefix, obj = "", module
        try:
            for part in name.split("."):
                prefix = f"{prefix}.{part}" if prefix else part
                if prefix not in objects:   # one request per attribute, shared by sibling names
                    objects[prefix] = getattr(obj, part)
                obj = objects[prefix]
        except Exception:  # noqa: BLE001 -- no such attribute (or a plain list): not a plain tensor
            continue
        if isinstance(obj, torch.Tensor):
            found[name] = obj
    return found


def plain_hint(names) -> str:
    shown = ", ".join(sorted(names)[:4]) + (", ..." if len(names) > 4 else "")
    one = len(names) == 1
    return (f"{shown} {'is a plain tensor, not an nn.Parameter' if one else 'are plain tensors, not nn.Parameters'}: "
            f"wrap {'it' if one else 'each'} in nn.Parameter(...) so that it is trained, saved in state_dict and "
            "moved by .to()")


def key_hints(missing: set[str], extra: set[str], plain=()) -> list[str]:
    hints = [plain_hint(plain)] if plain else []
    missing = set(missing) - set(plain)   # what the plain tensors explain needs no other hint
    if "lm_head.bias" in extra:
        hints.append("lm_head has a bias: build it as nn.Linear(d_model, vocab_size, bias=False)")
    if "lm_head.weight" in missing:
        hints.append("there is no lm_head: build lm_head = nn.Linear(d_model, vocab_size, bias=False) and "
                     "tie its weight (self.lm_head.weight = self.tok_emb.weight)")
    if any(k.startswith("ln_f.") for k in missing):
        hints.append("there is no final LayerNorm named ln_f")
    if any(k.startswith("blocks.") for k in missing) and not any(k.startswith("blocks.") for k in extra):
        hints.append("the blocks must sit in an nn.ModuleList named blocks (a plain list hides "
                     "their weights from the model)")
        missing = {k for k in missing if not k.startswith("blocks.")}
    if any(k.endswith(".bias") for k in missing) and not extra:
        hints.append("a bias is missing (LayerNorm and the Linear layers have one by default)")
    if not hints:
        hints.append("use exactly the attribute names of the handout (ln1, attn, ln2, ffn, fc, proj, "
                     "tok_emb, pos_emb, blocks, ln_f, lm_head, weight, bias)")
    return hints


def shape_hint(key: str, expected: tuple, got: tuple) -> str:
    """Why a FeedForward weight has the wrong shape, when it is the known mistake."""
    if key.endswith("fc.weight") and len(got) == 2 and got == (4 * got[1], got[1]) and expected[0] != got[0]:
        hidden = f"4 * d_model = {got[0]}"
    elif key.endswith("proj.weight") and len(got) == 2 and got == (got[0], 4 * got[0]) and expected[1] != got[1]:
        hidden = f"4 * d_model = {got[1]}"
    else:
        return ""
    d_ff = expected[0] if key.endswith("fc.weight") else expected[1]
    return f"\n(looks like d_ff is ignored: {hidden} hidden units are used instead of d_ff = {d_ff})"


def expect_keys(state: dict, expected: dict, what: str, module=None) -> None:
    """The student's state dict has exactly the reference's keys and shapes (`module`, when given,
    is asked whether a missing key is held as a plain tensor, to say so)."""
    expect_type(state, dict, what=f"{what}.state_dict()")
    missing, extra = set(expected) - set(state), set(state) - set(expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys {sorted(missing)[:6]}")
        if extra:
            parts.append(f"unexpected keys {sorted(extra)[:6]}")
        plain = plain_tensors(module, missing) if module is not None and missing else {}
        hint = "; ".join(key_hints(missing, extra, plain))
        raise CheckFailure(f"{what}.state_dict(): {', '.join(parts)}\n({hint})")
    for key, value in expected.items():
        got = state[key]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(value.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            hint = shape_hint(key, tuple(value.shape), shape) if isinstance(shape, tuple) else ""
            raise CheckFailure(f"{what}.state_dict()[{key!r}]: expected shape {tuple(value.shape)}, "
                               f"got {shape}{hint}")


def own_width(student, cls: str, *args, key: str, d_ff: int | None) -> int | None:
    """The hidden width (rows of `key`, e.g. "ffn.fc.weight") of the student's own `cls`(*args, d_ff),
    else `d_ff`. Error carried forward: a FeedForward (or block) that ignores d_ff is charged by its own
    tests, and a test of the whole builds its reference with the width the student's part has."""
    try:
        shape = tuple(getattr(student.transformer, cls)(*args, d_ff).state_dict()[key].shape)
    except Exception:  # noqa: BLE001 -- a part that cannot be built is charged by its own tests
        return d_ff
    return shape[0] if len(shape) == 2 else d_ff


def student_like(student, ref, cls: str, *args, device: str, what: str, dtype=torch.float32, **kwargs):
    """The student's `cls`(*args, **kwargs) holding the reference's weights, on `device`, in eval mode
    (converted with .double() first when `dtype` is float64).

    Error carried forward: a LayerNorm weight or bias kept as a plain tensor cannot be loaded; it is
    charged by the parameter, state-dict and gradient tests, and here `ref` takes the student's own
    values of those tensors instead, so that the value tests judge the rest."""
    module = getattr(student.transformer, cls)(*args, **kwargs)
    if dtype == torch.float64:
        module.double()
    expected = ref.state_dict()
    state = module.state_dict()
    plain = plain_tensors(module, set(expected) - set(state)) if isinstance(state, dict) else {}
    expect_keys({**state, **plain} if plain else state, expected, what)
    if plain and torch.device(device).type != "cpu":
        raise CheckFailure(f"{what}: {plain_hint(plain)}; .to({device!r}) leaves a plain tensor on the CPU, "
                           "so the module cannot run there")
    module.load_state_dict({k: v for k, v in expected.items() if k not in plain}, strict=not plain)
    if plain:
        with torch.no_grad():
            ref.load_state_dict({k: v.to(expected[k].dtype) for k, v in plain.items()}, strict=False)
    module.to(device)
    module.eval()
    return module


# ---- comparing gradients ----------------------------------------------------------

def tied_names(names) -> set[str]:
    """Parameter names, with a tied head/embedding weight always called tok_emb.weight."""
    names = set(names)
    if "lm_head.weight" in names and "tok_emb.weight" not in names:
        names = (names - {"lm_head.weight"}) | {"tok_emb.weight"}
    return names


def expect_param_grads(got: dict, expected: dict, what: str, mistakes: dict | None = None, module=None) -> None:
    """Each parameter's gradient (by name) matches; `mistakes` maps a name to {description: grad};
    `module`, when given, is asked whether a missing parameter is held as a plain tensor."""
    if not isinstance(got, dict):
        raise CheckFailure(f"{what}: no parameter gradients came back")
    if "lm_head.weight" in got and "tok_emb.weight" not in got:
        got = {("tok_emb.weight" if k == "lm_head.weight" else k): v for k, v in got.items()}
    missing, extra = set(expected) - set(got), set(got) - set(expected)
    if "lm_head.weight" in extra and "tok_emb.weight" in got:
        raise CheckFailure(f"{what}: looks like the weights are not tied: lm_head.weight is a parameter of "
                           "its own (assign the Parameter itself: self.lm_head.weight = self.tok_emb.weight)")
    if missing or extra:
        plain = plain_tensors(module, missing) if module is not None and missing else {}
        raise CheckFailure(f"{what}: the trainable parameters differ from the contract's "
                           f"(missing {sorted(missing)[:6]}, unexpected {sorted(extra)[:6]})"
                           + (f"\n({plain_hint(plain)})" if plain else ""))
    for name, grad in expected.items():
        if got[name] is None:
            raise CheckFailure(f"{what}: no gradient reached {name} (is it used in forward, "
                               "without .data, .detach() or a copy?)")
        expect_close(got[name], grad, what=f"{what}: the gradient of {name}",
                     mistakes=(mistakes or {}).get(name))


def reference_backward(module64, *args, grad_output=None, output_index=None, dtype=torch.float32):
    """The float64 reference's value, input grads and param grads, cast to `dtype`."""
    result = backward(module64, *args, grad_output=grad_output, output_index=output_index)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    value = result.value
    if isinstance(value, tuple):
        value = tuple(cast(v) if isinstance(v, torch.Tensor) else v for v in value)
    else:
        value = cast(value)
    return value, [cast(g) for g in result.input_grads], {k: cast(v) for k, v in result.param_grads.items()}


# ---- known mistakes, as float64 functions of the reference's weights ------------------

def layer_norm(x, weight=None, bias=None, eps=1e-5, unbiased=False, eps_outside=False,
               one_pass=False, detach=()):
    """Layer norm over the last dim, or one of its known mistakes (float64 inside)."""
    dtype, x = x.dtype, x.double()
    mean = x.mean(-1, keepdim=True)
    if one_pass:
        x32 = x.to(dtype)
        mean32 = x32.mean(-1, keepdim=True)
        var = ((x32 * x32).mean(-1, keepdim=True) - mean32 * mean32).double()
    else:
        var = x.var(-1, keepdim=True, unbiased=unbiased)
    if "mean" in detach:
        mean = mean.detach()
    if "var" in detach:
        var = var.detach()
    y = (x - mean) / (var.sqrt() + eps if eps_outside else (var + eps).sqrt())
    if weight is not None:
        y = y * weight.double()
    if bias is not None:
        y = y + bias.double()
    return y.to(dtype)


ACTIVATIONS = {
    "the tanh approximation of GELU is used; the contract asks for the exact (erf) GELU "
    "(F.gelu(x) with the default approximate='none')": lambda h: F.gelu(h, approximate="tanh"),
    "ReLU is used instead of GELU": F.relu,
    "the sigmoid approximation x * sigmoid(1.702 x) is used instead of the exact GELU":
        lambda h: h * torch.sigmoid(1.702 * h),
    "there is no activation between fc and proj": lambda h: h,
}


def ffn_with(ffn, x, activation=F.gelu):
    return ffn.proj(activation(ffn.fc(x)))


def block_with(block, x, kind: str, causal: bool = True):
    """A float64 block wired the right way ("pre-norm") or as one of the known mistakes."""
    ln1, attn, ln2, ffn = block.ln1, block.attn, block.ln2, block.ffn
    if kind == "pre-norm":
        x = x + attn(ln1(x), causal=causal)
        return x + ffn(ln2(x))
    if kind == "post-norm":
        x = ln1(x + attn(x, causal=causal))
        return ln2(x + ffn(x))
    if kind == "no attention residual":
        x = attn(ln1(x), causal=causal)
        return x + ffn(ln2(x))
    if kind == "no feed-forward residual":
        x = x + attn(ln1(x), causal=causal)
        return ffn(ln2(x))
    if kind == "normed residual":
        h = ln1(x)
        x = h + attn(h, causal=causal)
        h = ln2(x)
        return h + ffn(h)
    if kind == "ln1 twice":
        x = x + attn(ln1(x), causal=causal)
        return x + ffn(ln1(x))
    if kind == "not causal":
        x = x + attn(ln1(x), causal=not causal)
        return x + ffn(ln2(x))
    raise ValueError(kind)


BLOCK_MISTAKES = {
    "post-norm: the block normalises after adding (x = ln(x + f(x))); the contract is pre-norm, "
    "x = x + f(ln(x))": "post-norm",
    "the attention sublayer has no residual connection (x = x + attn(ln1(x)))": "no attention residual",
    "the feed-forward sublayer has no residual connection (x = x + ffn(ln2(x)))": "no feed-forward residual",
    "the residual adds the normalised input ln(x) instead of x itself": "normed residual",
    "ln1 is used before the feed-forward too; it needs its own ln2": "ln1 twice",
    "the causal flag is not passed on to attention (or is inverted)": "not causal",
}


def block_mistakes(block64, x64, dtype, causal: bool = True) -> dict:
    return {description: (lambda kind=kind: block_with(block64, x64, kind, causal).to(dtype))
            for description, kind in BLOCK_MISTAKES.items()}


def gpt_with(model, idx, block_kind="pre-norm", final_norm=True, positions=True, probs=False):
    """A float64 GPT forward (logits) wired the right way or as one of the known mistakes."""
    T = idx.shape[1]
    x = model.tok_emb(idx) + (model.pos_emb(T) if positions else 0.0)
    for block in model.blocks:
        x = block_with(block, x, block_kind)
    logits = model.lm_head(model.ln_f(x) if final_norm else x)
    return logits.softmax(-1) if probs else logits


GPT_FORWARD_MISTAKES = {
    "there is no final LayerNorm (ln_f) before lm_head": dict(final_norm=False),
    "the positional embeddings are not added to the token embeddings": dict(positions=False),
    "the logits are turned into probabilities; forward must return the raw logits": dict(probs=True),
}
LOSS_MISTAKES = {
    "the loss is summed over positions instead of averaged": "summed",
    "the loss is averaged over the batch only (summed over time)": "batch only",
    "the targets are shifted by one position again (targets[t] already is the token after idx[t])": "shifted",
    "the loss is the log-likelihood, not its negative": "negated",
}


def gpt_mistakes(model64, idx, dtype) -> dict:
    with torch.no_grad():
        variants = dict(GPT_FORWARD_MISTAKES)
        variants |= {f"the blocks are wrong: {d}": dict(block_kind=k) for d, k in BLOCK_MISTAKES.items()}
        return {d: (lambda kw=kw: gpt_with(model64, idx, **kw).to(dtype)) for d, kw in variants.items()}


def loss_with(logits, targets, kind: str = "mean"):
    """logits (B, T, V), targets (B, T) -> the mean cross-entropy, or one of LOSS_MISTAKES' kinds."""
    B, T, V = logits.shape
    if kind == "shifted":
        return F.cross_entropy(logits[:, :-1].reshape(-1, V), targets[:, 1:].reshape(-1))
    nll = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
    return {"mean": nll.mean(), "summed": nll.sum(), "batch only": nll.sum() / B, "negated": -nll.mean()}[kind]


def loss_mistakes(logits64: torch.Tensor, targets: torch.Tensor) -> dict:
    return {d: loss_with(logits64, targets, kind).item() for d, kind in LOSS_MISTAKES.items()}


def gpt_grad_mistakes(model64, idx, targets, dtype) -> dict:
    """{parameter name: {description: gradient}}: what each known forward or loss mistake of GPT
    gives each parameter of the float64 `model64` (cast to `dtype`; None where none reaches it),
    computed on the first failure only."""
    variants = {d: (kw, "mean") for d, kw in GPT_FORWARD_MISTAKES.items()}
    variants |= {d: ({}, kind) for d, kind in LOSS_MISTAKES.items()}
    params = dict(model64.named_parameters())   # a tied head is tok_emb.weight, as in the test
    cache: dict = {}

    def grads(description):
        if description not in cache:
            kw, kind = variants[description]
            with torch.enable_grad():
                loss = loss_with(gpt_with(model64, idx, **kw), targets, kind)
                found = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            cache[description] = {n: None if g is None else g.to(dtype) for n, g in zip(params, found)}
        return cache[description]
    return {name: {d: (lambda d=d, name=name: grads(d)[name]) for d in variants} for name in params}


def gelu_inputs(device: str) -> torch.Tensor:
    """Values where the exact and the tanh GELU differ most (|x| 2..3), and a few ordinary ones."""
    x = torch.tensor([[-3.0, -2.7, -2.5, -2.2, -1.5, -1.0, -0.5, 0.0],
                      [0.3, 0.8, 1.0, 1.5, 2.2, 2.5, 2.7, 3.0]], dtype=torch.float64)
    return x.to(device=device, dtype=torch.float32)
