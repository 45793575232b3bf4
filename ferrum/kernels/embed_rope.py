"""A forward's first step, the token embeddings and the rope tables of the tokens' positions,
as one kernel.

The model's forward begins with two lookups: the embedding rows of the input tokens and the
per-position rope rows every layer reads. Torch runs each as a gather kernel of its own, and a
decode step of a small model pays per kernel (a few microseconds each), not per byte; here one
program per token copies both rows.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ferrum.kernels import launch
from ferrum.kernels.launch import gdc_launch_dependents, gdc_wait

BLOCK_H = 1024  # embedding elements a program copies per iteration


@triton.jit
def _embed_rope_kernel(
    ids_ptr,
    pos_ptr,
    emb_ptr,
    tab_ptr,
    x_ptr,
    rope_ptr,
    hidden,
    stride_e,
    stride_t,
    ROPE: tl.constexpr,  # elements of one position's rope row (2 x head_dim)
    BLOCK_H: tl.constexpr,
    BLOCK_R: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    if USE_PDL:  # the token ids and positions may come from the kernel before
        gdc_wait()
        gdc_launch_dependents()
    t = tl.program_id(0).to(tl.int64)
    token = tl.load(ids_ptr + t).to(tl.int64)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    r = tl.arange(0, BLOCK_R)
    row = tl.load(tab_ptr + pos * stride_t + r, mask=r < ROPE)
    tl.store(rope_ptr + t * ROPE + r, row, mask=r < ROPE)
    h = tl.arange(0, BLOCK_H)
    for h0 in range(0, hidden, BLOCK_H):
        mask = h0 + h < hidden
        tl.store(
            x_ptr + t * hidden + h0 + h,
            tl.load(emb_ptr + token * stride_e + h0 + h, mask=mask),
            mask=mask,
        )


def embed_and_rope(
    ids: torch.Tensor,  # (T,) int64 token ids
    positions: torch.Tensor,  # (T,) int64
    embedding: torch.Tensor,  # (vocab, hidden)
    table: torch.Tensor,  # (max_positions, 2, head_dim): RotaryEmbedding's cos|sin rows
) -> tuple[torch.Tensor, torch.Tensor]:
    """(embedding[ids] (T, hidden), table[positions] (T, 2, head_dim)), as new tensors."""
    tokens = ids.shape[0]
    hidden = embedding.shape[1]
    if embedding.stride(1) != 1 or not table.is_contiguous():
        raise ValueError("embed_and_rope needs rows with unit inner stride")
    x = torch.empty(tokens, hidden, dtype=embedding.dtype, device=embedding.device)
    rope = torch.empty(tokens, *table.shape[1:], dtype=table.dtype, device=table.device)
    width = table[0].numel()  # one position's cos and sin
    if tokens:
        _embed_rope_kernel[(tokens,)](
            ids, positions, embedding, table, x, rope, hidden, embedding.stride(0),
            table.stride(0), ROPE=width, BLOCK_H=min(BLOCK_H, triton.next_power_of_2(hidden)),
            BLOCK_R=triton.next_power_of_2(width), **launch.options(),
        )  # fmt: skip
    return x, rope
