"""STYLE: top-k by sorting and a threshold, top-p with a Python loop over rows, the softmax in
float64 (multinomial gets float64 probabilities), generate with a no_grad block inside

A correct sampling.py written differently from the reference (corpus for the autograder).
"""

import torch


def apply_temperature(logits, temperature):
    if temperature <= 0:
        raise ValueError("the temperature must be positive")
    return logits / temperature


def top_k_filter(logits, k):
    V = logits.shape[-1]
    if k >= V:
        return logits
    threshold = torch.sort(logits, dim=-1, descending=True).values[..., k - 1].unsqueeze(-1)
    return torch.where(logits >= threshold, logits, torch.full_like(logits, float("-inf")))


def top_p_filter(logits, p):
    if p <= 0 or p > 1:
        raise ValueError("p must be in (0, 1]")
    if p == 1:
        return logits
    flat = logits.reshape(-1, logits.shape[-1])
    out = torch.full_like(flat, float("-inf"))
    for r in range(flat.shape[0]):
        probs = torch.softmax(flat[r].double(), dim=0)
        order = sorted(range(flat.shape[1]), key=lambda i: -probs[i].item())
        total = 0.0
        for i in order:
            out[r, i] = flat[r, i]
            total += probs[i].item()
            if total >= p:
                break
    return out.reshape(logits.shape)


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.max(dim=-1).indices.unsqueeze(1)
    x = apply_temperature(logits, temperature)
    if top_k is not None:
        x = top_k_filter(x, top_k)
    if top_p is not None:
        x = top_p_filter(x, top_p)
    x = x.double()
    x = x - x.max(dim=-1, keepdim=True).values
    weights = x.exp()
    probs = weights / weights.sum(dim=-1, keepdim=True)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def generate(model, idx, max_new_tokens, block_size, temperature=1.0, top_k=None, top_p=None,
             generator=None):
    with torch.no_grad():
        for _ in range(max_new_tokens):
            out = model(idx if idx.shape[1] <= block_size else idx[:, idx.shape[1] - block_size:])
            if isinstance(out, (tuple, list)):
                out = out[0]
            step = sample_next(out[:, out.shape[1] - 1], temperature, top_k, top_p, generator)
            idx = torch.cat((idx, step), dim=1)
    return idx
