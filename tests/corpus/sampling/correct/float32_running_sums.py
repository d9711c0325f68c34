"""STYLE: Python loops with float32 running sums: top-p walks the sorted tokens in a Python loop keeping a float32 running cumulative sum (vectorised over rows, so at the cut a token can flip against a float64 sum), the softmax denominators are float32 running sums over the vocabulary, top-k takes the k-th value by sorting; generate builds the output column by column.

A correct sampling.py (corpus for the autograder); it must score the maximum.
"""

import torch


def _running_softmax(x):
    """softmax over the last dim of 2-D x with a float32 running sum over the columns."""
    biggest = x.max(dim=-1, keepdim=True).values
    exps = torch.exp(x - biggest)
    total = torch.zeros_like(exps[:, 0])
    for j in range(x.shape[-1]):
        total = total + exps[:, j]
    return exps / total[:, None]


def apply_temperature(logits, temperature):
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    return logits / temperature


def top_k_filter(logits, k):
    if k >= logits.shape[-1]:
        return logits
    kth = logits.sort(dim=-1, descending=True).values[..., k - 1: k]
    return torch.where(logits >= kth, logits, torch.full_like(logits, float("-inf")))


def top_p_filter(logits, p):
    if not (0 < p <= 1):
        raise ValueError("p must be in (0, 1]")
    if p == 1:
        return logits
    rows = logits.reshape(-1, logits.shape[-1])
    sorted_logits, order = rows.sort(dim=-1, descending=True)
    probs = _running_softmax(sorted_logits)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    mass = torch.zeros_like(probs[:, 0])           # float32 running sum of the tokens kept so far
    for j in range(probs.shape[-1]):
        keep[:, j] = mass < p                      # nothing before the first token: always kept
        mass = mass + probs[:, j]
    keep_original = torch.zeros_like(keep).scatter(-1, order, keep)
    out = torch.where(keep_original, rows, torch.full_like(rows, float("-inf")))
    return out.reshape(logits.shape)


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    x = apply_temperature(logits, temperature)
    if top_k is not None:
        x = top_k_filter(x, top_k)
    if top_p is not None:
        x = top_p_filter(x, top_p)
    return torch.multinomial(_running_softmax(x), 1, generator=generator)


@torch.no_grad()
def generate(model, idx, max_new_tokens, block_size, temperature=1.0, top_k=None, top_p=None, generator=None):
    columns = [idx]
    current = idx
    for _ in range(max_new_tokens):
        out = model(current[:, -block_size:])
        logits = out[0] if isinstance(out, tuple) else out
        nxt = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
        columns.append(nxt)
        current = torch.cat(columns, dim=1)
    return current
