"""Stage 4 — embeddings: from token ids to vectors.

A token id is only a name; a model needs numbers it can learn. A token
embedding is a table with one learned row per id, a positional embedding one
row per position (or a fixed sinusoid), and cosine similarity lets us ask which
rows point the same way. See assignments/handouts/04-embeddings.md.
"""

import math

import torch
from torch import nn

# PyTorch's ready-made versions of what this stage builds; calling one fails in the grader.
BANNED_APIS = (
    "torch.nn.Embedding",
    "torch.nn.EmbeddingBag",
    "torch.nn.functional.embedding",
    "torch.nn.functional.embedding_bag",
    "torch.embedding",
    "torch.nn.functional.one_hot",
    "torch.nn.functional.cosine_similarity",
    "torch.cosine_similarity",
    "torch.nn.CosineSimilarity",
)


def one_hot(ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float32 (..., num_classes) on the device of `ids` (int64, any shape (...)):
    out[..., j] = 1.0 where ids[...] == j, else 0.0."""
    classes = torch.arange(num_classes, device=ids.device)
    return (ids.unsqueeze(-1) == classes).to(torch.float32)


class TokenEmbedding(nn.Module):
    """A learned table, one row of d_model numbers per token id."""

    def __init__(self, vocab_size: int, d_model: int):
        """weight: nn.Parameter (vocab_size, d_model) float32, drawn from N(0, 0.02)
        (mean 0, standard deviation 0.02)."""
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab_size, d_model) * 0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) int64 -> (..., d_model): row ids[...] of weight, the same as
        one_hot(ids, vocab_size) @ weight. An id outside [0, vocab_size), negative
        ones included, is an IndexError (on every device: check before indexing)."""
        vocab_size = self.weight.shape[0]
        if ids.numel() > 0 and (ids.min().item() < 0 or ids.max().item() >= vocab_size):
            raise IndexError(f"token ids must lie in [0, {vocab_size}), got values from "
                             f"{ids.min().item()} to {ids.max().item()}")
        return self.weight[ids]


class PositionalEmbedding(nn.Module):
    """A learned table, one row of d_model numbers per position 0..block_size-1."""

    def __init__(self, block_size: int, d_model: int):
        """weight: nn.Parameter (block_size, d_model) float32, drawn from N(0, 0.02)."""
        super().__init__()
        self.weight = nn.Parameter(torch.randn(block_size, d_model) * 0.02)

    def forward(self, seq_len: int) -> torch.Tensor:
        """(seq_len, d_model): the rows of positions 0..seq_len-1. seq_len > block_size
        is a ValueError."""
        block_size = self.weight.shape[0]
        if seq_len > block_size:
            raise ValueError(f"seq_len {seq_len} is longer than block_size {block_size}")
        return self.weight[:seq_len]


def sinusoidal_positions(seq_len: int, d_model: int) -> torch.Tensor:
    """(seq_len, d_model) float32 on the CPU, for positions p = 0..seq_len-1:
    PE[p, 2i] = sin(p / 10000^(2i / d_model)), PE[p, 2i+1] = cos(p / 10000^(2i / d_model)).
    An odd d_model is a ValueError."""
    if d_model % 2:
        raise ValueError(f"d_model must be even, got {d_model}")
    positions = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)          # (seq_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)                      # (d_model / 2,)
    angles = positions / torch.pow(10000.0, two_i / d_model)                      # (seq_len, d_model / 2)
    pe = torch.empty(seq_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe.to(torch.float32)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """a (..., d), b (..., d), broadcast against each other -> (...): the cosine of the
    angle between the vectors along the LAST dim, in the dtype and on the device of
    the inputs: a·b / (max(||a||, eps) * max(||b||, eps)), so a zero vector gives 0."""
    dot = (a * b).sum(dim=-1)
    norm_a = a.norm(dim=-1).clamp_min(eps)
    norm_b = b.norm(dim=-1).clamp_min(eps)
    return dot / (norm_a * norm_b)


def nearest(query: torch.Tensor, table: torch.Tensor, k: int = 1,
            exclude: list[int] = ()) -> torch.Tensor:
    """query (d,), table (V, d) -> (k,) int64 on the device of table: the indices of the
    k rows with the highest cosine similarity to query, best first, never one in `exclude`."""
    scores = cosine_similarity(query, table)                                       # (V,)
    excluded = torch.tensor(list(exclude), dtype=torch.int64, device=table.device)
    scores = scores.index_fill(0, excluded, -math.inf)
    return torch.topk(scores, k).indices


def analogy(table: torch.Tensor, a: int, b: int, c: int, k: int = 1) -> torch.Tensor:
    """"a is to b as c is to ?": (k,) int64, the nearest rows to table[b] - table[a] + table[c],
    best first, leaving out a, b and c themselves."""
    return nearest(table[b] - table[a] + table[c], table, k, exclude=[a, b, c])
