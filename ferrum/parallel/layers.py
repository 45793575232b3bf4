"""The layers a sharded model computes with: the pieces `apply_tp` swaps in.

Column-parallel layers need no module of their own (a plain nn.Linear over this rank's output
rows, whose result the next layer consumes shard-wise); the row-parallel linear ends in the
all-reduce, and the vocabulary-parallel embedding reduces its partial lookups the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ferrum.parallel.comm import all_reduce


class RowParallelLinear(nn.Module):
    """y = Σ_ranks x_r · W_rᵀ + b: each rank holds the input columns of its shard of x."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)  # (out, in / world)
        # the bias is added once, after the sum
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = all_reduce(F.linear(x, self.weight))
        return y if self.bias is None else y + self.bias


class VocabParallelEmbedding(nn.Module):
    """Rows [start, start + rows) of the embedding table; the other ranks hold the rest.

    A token outside this rank's range contributes zeros, so the all-reduce leaves each token the
    one row that exists. `weight` is this rank's shard (tied logits use it too)."""

    def __init__(self, weight: torch.Tensor, start: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)  # (rows, hidden)
        self.start = start

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.start
        outside = (local < 0) | (local >= self.weight.shape[0])
        out = F.embedding(local.masked_fill(outside, 0), self.weight)  # (T, hidden)
        return all_reduce(out.masked_fill_(outside.unsqueeze(-1), 0))
