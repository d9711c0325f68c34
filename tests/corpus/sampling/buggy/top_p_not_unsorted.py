"""BUG: top_p_filter applies the sorted keep/drop mask to the unsorted logits (no scatter back)
EXPECT: scattered back
PART: test_top_p_*

The reference sampling.py with exactly this one mistake (corpus for the autograder).
"""

import torch


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature: same shape (..., V), dtype and device.

    temperature < 1 sharpens the distribution, > 1 flattens it; temperature <= 0 is a
    ValueError (temperature 0, greedy decoding, is handled by sample_next, not here).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep, in each row of `logits` (..., V), the logits >= the row's k-th largest value;
    set every other one to -inf. Ties with the k-th largest are all kept, so a row may keep
    more than k. k >= V returns the logits unchanged. Same shape, dtype and device."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k >= logits.shape[-1]:
        return logits
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering of `logits` (..., V), 0 < p <= 1: keep, in each row, the smallest
    set of most probable tokens whose probabilities sum to >= p (the token that crosses p
    is kept, and the most probable token always is); set the others to -inf.
    p == 1 returns the logits unchanged; p outside (0, 1] is a ValueError."""
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    if p == 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    # A token is dropped when the more probable tokens before it already reach p; the
    # token that crosses p (and the first token, with nothing before it) stays.
    drop_sorted = mass_before >= p
    drop = drop_sorted
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row of `logits` (B, V): returns (B, 1) int64 on the logits' device.

    temperature == 0 is greedy decoding (argmax, no randomness). Otherwise, in this order:
    apply_temperature, top_k_filter (when top_k is not None), top_p_filter (when top_p is
    not None), then torch.multinomial(softmax(logits), 1, generator=generator).
    """
    if temperature == 0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def generate(model, idx: torch.Tensor, max_new_tokens: int, block_size: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Extend idx (B, T) int64 by max_new_tokens tokens: returns (B, T + max_new_tokens) int64.

    Each step feeds the model the last block_size tokens (idx_cond), takes the logits of
    the LAST position (model(idx_cond) returns logits (B, t, V) or a (logits, loss) tuple),
    draws the next token with sample_next and appends it.
    """
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -block_size:]
        out = model(idx_cond)
        logits = out[0] if isinstance(out, tuple) else out
        next_token = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
        idx = torch.cat([idx, next_token], dim=1)
    return idx
