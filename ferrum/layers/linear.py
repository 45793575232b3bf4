"""Fused linear layers: several checkpoint matrices stacked along the output rows of one matmul.

q/k/v become one `qkv_proj`, gate/up one `gate_up_proj`: one matmul instead of three (or two), which
matters most in decode, where each is a tiny GEMV. The fusion happens at load time: each shard of
the checkpoint is copied into its row range by the parameter's `weight_loader(param, tensor,
shard_id)`, and the layer records which shards arrived so a checkpoint missing one is caught.
"""

from __future__ import annotations

from collections.abc import Hashable

import torch
import torch.nn.functional as F
from torch import nn

from ferrum.errors import CheckpointError
from ferrum.kernels import interpreting

# Rows of a product that take the tile GEMM where it is on (EngineConfig.tile_gemm): a decode
# step of 17-64 sequences. One row takes the skinny GEMV (the decoder layers' own path), 2-16
# stay on cuBLAS, as do prompt chunks of more rows (compute-bound: cuBLAS is at its best).
TILE_ROWS = range(17, 65)


class FusedLinear(nn.Linear):
    """nn.Linear whose output rows are named shards (e.g. "q", "k", "v") loaded separately."""

    def __init__(self, in_features: int, shards: dict[Hashable, int], bias: bool) -> None:
        super().__init__(in_features, sum(shards.values()), bias=bias)
        self.shard_rows: dict[Hashable, tuple[int, int]] = {}  # shard -> (first row, row count)
        start = 0
        for shard_id, rows in shards.items():
            self.shard_rows[shard_id] = (start, rows)
            start += rows
        self.loaded_shards: set[tuple[str, Hashable]] = set()
        self.weight.weight_loader = self.weight_loader
        if self.bias is not None:
            self.bias.weight_loader = self.weight_loader

    def init_buffers(self) -> None:
        # materialize() carries the loaders across to_empty(); only the bookkeeping resets
        self.loaded_shards.clear()

    def weight_loader(self, param: nn.Parameter, tensor: torch.Tensor, shard_id: Hashable) -> None:
        """Copy one checkpoint shard into its rows of `param` (the weight or the bias)."""
        if shard_id not in self.shard_rows:
            raise CheckpointError(f"fused projection has no shard {shard_id!r}")
        start, rows = self.shard_rows[shard_id]
        target = param.data.narrow(0, start, rows)
        if tuple(target.shape) != tuple(tensor.shape):
            kind = "weight" if param is self.weight else "bias"
            raise CheckpointError(
                f"checkpoint {kind} for shard {shard_id!r} of a fused projection has shape "
                f"{tuple(tensor.shape)}, the model expects {tuple(target.shape)}"
            )
        with torch.no_grad():
            target.copy_(tensor)
        self.loaded_shards.add(("weight" if param is self.weight else "bias", shard_id))

    def missing_shards(self) -> list[str]:
        """'weight[k]'-style names of the shards no checkpoint tensor has filled yet."""
        kinds = ["weight"] + (["bias"] if self.bias is not None else [])
        return [
            f"{kind}[{shard_id}]"
            for kind in kinds
            for shard_id in self.shard_rows
            if (kind, shard_id) not in self.loaded_shards
        ]


def qkv_linear(
    hidden: int, num_heads: int, num_kv_heads: int, head_dim: int, bias: bool
) -> FusedLinear:
    """The fused [q | k | v] projection of one attention layer."""
    return FusedLinear(
        hidden,
        {"q": num_heads * head_dim, "k": num_kv_heads * head_dim, "v": num_kv_heads * head_dim},
        bias,
    )


def gate_up_linear(hidden: int, intermediate: int, bias: bool) -> FusedLinear:
    """The fused [gate | up] projection of one gated MLP (shards 0 and 1)."""
    return FusedLinear(hidden, {0: intermediate, 1: intermediate}, bias)


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tile: bool
) -> torch.Tensor:
    """F.linear; with `tile`, a product of TILE_ROWS rows on the tile GEMM
    (`ferrum.kernels.tile_gemm`: it reads the weights of a decode step faster than cuBLAS)."""
    if tile and x.dim() == 2 and x.shape[0] in TILE_ROWS and (x.is_cuda or interpreting()):
        from ferrum.kernels.tile_gemm import tile_linear

        return tile_linear(x, weight, bias)
    return F.linear(x, weight, bias)


def project(layer: nn.Module, x: torch.Tensor, tile: bool) -> torch.Tensor:
    """layer(x), by `linear` where the layer is a plain or fused nn.Linear (a quantized or
    tensor-parallel layer keeps its own forward)."""
    if tile and type(layer) in (nn.Linear, FusedLinear):
        return linear(x, layer.weight, layer.bias, tile)
    return layer(x)
