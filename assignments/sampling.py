# Your file for this stage: replace each NotImplementedError with your code.
"""Stage 7 — decoding: from logits to tokens (temperature, top-k, top-p, generate).

A language model gives one row of logits per position; decoding turns the last
row into the next token and repeats. Temperature reshapes the distribution,
top-k and top-p cut off its unlikely tail, and a seeded torch.Generator makes
every draw reproducible. See assignments/handouts/07-sampling.md.
"""

import torch


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature: same shape (..., V), dtype and device.

    temperature < 1 sharpens the distribution, > 1 flattens it; temperature <= 0 is a
    ValueError (temperature 0, greedy decoding, is handled by sample_next, not here).
    """
    # TODO: your code here
    raise NotImplementedError


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep, in each row of `logits` (..., V), the logits >= the row's k-th largest value;
    set every other one to -inf. Ties with the k-th largest are all kept, so a row may keep
    more than k. k >= V returns the logits unchanged. Same shape, dtype and device."""
    # TODO: your code here
    raise NotImplementedError


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering of `logits` (..., V), 0 < p <= 1: keep, in each row, the smallest
    set of most probable tokens whose probabilities sum to >= p (the token that crosses p
    is kept, and the most probable token always is); set the others to -inf.
    p == 1 returns the logits unchanged; p outside (0, 1] is a ValueError."""
    # TODO: your code here
    raise NotImplementedError


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row of `logits` (B, V): returns (B, 1) int64 on the logits' device.

    temperature == 0 is greedy decoding (argmax, no randomness). Otherwise, in this order:
    apply_temperature, top_k_filter (when top_k is not None), top_p_filter (when top_p is
    not None), then torch.multinomial(softmax(logits), 1, generator=generator).
    """
    # TODO: your code here
    raise NotImplementedError


@torch.no_grad()
def generate(model, idx: torch.Tensor, max_new_tokens: int, block_size: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Extend idx (B, T) int64 by max_new_tokens tokens: returns (B, T + max_new_tokens) int64.

    Each step feeds the model the last block_size tokens (idx_cond), takes the logits of
    the LAST position (model(idx_cond) returns logits (B, t, V) or a (logits, loss) tuple),
    draws the next token with sample_next and appends it.
    """
    # TODO: your code here
    raise NotImplementedError
