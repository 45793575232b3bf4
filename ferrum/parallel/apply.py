"""`apply_tp`: shard a finished LLaMA-family model across `world_size` ranks, in place.

Every rank builds and loads the whole model, then keeps its slice (as gpt-fast does): the
model modules stay single-device code, and the only collectives are the ones the swapped-in
layers make — one all-reduce after attention, one after the MLP, one after the embedding
lookup, and one all-gather of the logits. Attention heads split evenly: rank r owns query
heads [r·H/n, (r+1)·H/n) and the matching KV heads, so its KV cache holds 1/n of each token.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ferrum.errors import InvalidInputError
from ferrum.layers.linear import FusedLinear
from ferrum.parallel.comm import all_gather_last_dim
from ferrum.parallel.layers import RowParallelLinear, VocabParallelEmbedding


def check_divisible(config, world_size: int) -> None:
    """A clear error when the model's heads or MLP cannot be split evenly."""
    for what, count in (
        ("attention heads", config.num_heads),
        ("key/value heads", config.num_kv_heads),
        ("MLP width", config.intermediate_size),
    ):
        if count % world_size:
            raise InvalidInputError(
                f"--tensor-parallel-size {world_size} does not divide the model's {what} "
                f"({count}); pick a size that does"
            )


def apply_tp(model: nn.Module, rank: int, world_size: int) -> nn.Module:
    """Keep rank `rank`'s shard of every layer of a LlamaForCausalLM-style model."""
    if world_size == 1:
        return model
    config = model.config
    check_divisible(config, world_size)
    for layer in model.model.layers:
        attn = layer.self_attn
        heads, kv_heads = attn.num_heads // world_size, attn.num_kv_heads // world_size
        attn.qkv_proj = _column_shards(attn.qkv_proj, rank, world_size)
        attn.o_proj = _row_parallel(attn.o_proj, rank, world_size)
        attn.num_heads = attn.attn.num_heads = heads
        attn.num_kv_heads = attn.attn.num_kv_heads = kv_heads
        mlp = layer.mlp
        mlp.gate_up_proj = _column_shards(mlp.gate_up_proj, rank, world_size)
        mlp.down_proj = _row_parallel(mlp.down_proj, rank, world_size)
    vocab = config.vocab_size
    rows = -(-vocab // world_size)  # the last shard is padded with zero rows
    embed = model.model.embed_tokens
    model.model.embed_tokens = VocabParallelEmbedding(
        _vocab_rows(embed.weight, rank, rows), rank * rows
    )
    if model.lm_head is not None:
        model.lm_head.weight = nn.Parameter(
            _vocab_rows(model.lm_head.weight, rank, rows), requires_grad=False
        )
    model.compute_logits = _gathered_logits(model.compute_logits, world_size, vocab)
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.empty_cache()  # the full tensors just dropped
    return model


def _column_shards(layer: FusedLinear, rank: int, world_size: int) -> nn.Linear:
    """This rank's 1/n of each fused shard's output rows, stacked in the same shard order."""
    pieces_w, pieces_b = [], []
    for start, count in layer.shard_rows.values():
        part = count // world_size
        first = start + rank * part
        pieces_w.append(layer.weight.data[first : first + part])
        if layer.bias is not None:
            pieces_b.append(layer.bias.data[first : first + part])
    weight = torch.cat(pieces_w)
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=layer.bias is not None, device="meta")
    out.weight = nn.Parameter(weight, requires_grad=False)
    if layer.bias is not None:
        out.bias = nn.Parameter(torch.cat(pieces_b), requires_grad=False)
    return out


def _row_parallel(layer: nn.Linear, rank: int, world_size: int) -> RowParallelLinear:
    cols = layer.in_features // world_size
    weight = layer.weight.data[:, rank * cols : (rank + 1) * cols].contiguous()
    bias = None if layer.bias is None else layer.bias.data
    return RowParallelLinear(weight, bias)


def _vocab_rows(weight: torch.Tensor, rank: int, rows: int) -> torch.Tensor:
    shard = weight.data[rank * rows : (rank + 1) * rows]
    if shard.shape[0] < rows:
        pad = shard.new_zeros(rows - shard.shape[0], shard.shape[1])
        shard = torch.cat([shard, pad])
    return shard.clone()


def _gathered_logits(
    shard_logits: Callable[[torch.Tensor], torch.Tensor], world_size: int, vocab: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """compute_logits over the whole vocabulary from each rank's shard of it."""

    def compute_logits(hidden: torch.Tensor) -> torch.Tensor:
        full = all_gather_last_dim(shard_logits(hidden), world_size)  # (N, world * rows)
        return full[:, :vocab]

    return compute_logits
