"""Attention over the paged KV cache, behind a small backend interface.

A batched forward sees its tokens flattened: the T new tokens of S sequences are rows of one
(T, ...) tensor, sequence i owning rows cu_seqlens_q[i]:cu_seqlens_q[i+1]. Each new token's K/V is
written to its cache slot (block_id * block_size + offset) before attention reads the sequence's
whole context back through its block table. There is no prefill or decode phase: a sequence
contributes however many query tokens the scheduler gave it (a prompt chunk, or one decode token),
and its queries sit at the end of its context.

The backend is chosen once by the model runner; models only call `Attention.forward`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ferrum.device import to_device
from ferrum.layers.norm import RMSNorm
from ferrum.layers.rotary import apply_rotary


@dataclass
class AttentionMetadata:
    """What one batched forward knows about its sequences (built by the model runner)."""

    slot_mapping: torch.Tensor  # (T,) int64: cache slot for each new token's K/V
    cu_seqlens_q: torch.Tensor  # (S+1,) int32: query rows of each sequence
    context_lens: torch.Tensor  # (S,) int32: KV length after this step (cached + new)
    block_tables: torch.Tensor  # (S, max_blocks) int32, padded with 0
    query_lens: list[int]  # host copies, for backends that loop in Python
    context_lens_host: list[int]
    max_context_len: int

    @property
    def num_seqs(self) -> int:
        return len(self.query_lens)

    @cached_property  # asked once per layer; the answer is per step
    def is_decode(self) -> bool:
        return all(q == 1 for q in self.query_lens)


class AttentionBackend(Protocol):
    """Computes attention for the flat batch, reading and writing one layer's paged KV cache."""

    def forward(
        self,
        q: torch.Tensor,  # (T, H, D)
        k: torch.Tensor,  # (T, Hkv, D)
        v: torch.Tensor,  # (T, Hkv, D)
        kv_cache: torch.Tensor,  # (2, num_blocks, block_size, Hkv, D)
        meta: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor: ...  # (T, H, D)


def store_kv(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, slots: torch.Tensor) -> None:
    """Write the new tokens' K/V (T, Hkv, D) into their cache slots."""
    num_blocks, block_size = kv_cache.shape[1], kv_cache.shape[2]
    flat = kv_cache.view(2, num_blocks * block_size, *kv_cache.shape[3:])
    flat[0].index_copy_(0, slots, k.to(kv_cache.dtype))
    flat[1].index_copy_(0, slots, v.to(kv_cache.dtype))


def gather_kv(
    kv_cache: torch.Tensor, block_table: torch.Tensor, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `length` cached K and V of one sequence, each (length, Hkv, D)."""
    block_size = kv_cache.shape[2]
    num = (length + block_size - 1) // block_size
    kv = kv_cache.index_select(1, block_table[:num])  # (2, num, block_size, Hkv, D)
    kv = kv.flatten(1, 2)[:, :length]
    return kv[0], kv[1]


class TorchPagedAttention:
    """Reference backend in plain PyTorch: SDPA per sequence, and a decode of several sequences
    batched into one SDPA over their padded contexts with a key-length mask. Runs anywhere; the
    Triton backend is checked against it.

    Cache slots outside a sequence's context (the tail of its last block, padding blocks) may
    hold anything, NaN included (the cache is allocated uninitialized): they are never read
    unmasked, and the batched path zeroes them so a masked NaN cannot leak through the softmax.
    """

    def forward(
        self,
        q: torch.Tensor,  # (T, H, D)
        k: torch.Tensor,  # (T, Hkv, D)
        v: torch.Tensor,  # (T, Hkv, D)
        kv_cache: torch.Tensor,  # (2, num_blocks, block_size, Hkv, D)
        meta: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:  # (T, H, D)
        store_kv(k, v, kv_cache, meta.slot_mapping)
        gqa = q.shape[1] != k.shape[1]
        if meta.num_seqs > 1 and meta.is_decode:
            return self._decode(q, kv_cache, meta, scale, gqa)
        out = torch.empty_like(q)
        start = 0
        for i, (q_len, ctx) in enumerate(zip(meta.query_lens, meta.context_lens_host, strict=True)):
            keys, values = gather_kv(kv_cache, meta.block_tables[i], ctx)  # (ctx, Hkv, D) each
            mask = None
            if 1 < q_len < ctx:
                # query j sits at position ctx - q_len + j and sees keys up to it
                qpos = torch.arange(ctx - q_len, ctx, device=q.device)[:, None]
                mask = torch.arange(ctx, device=q.device)[None, :] <= qpos  # (q_len, ctx)
            o = F.scaled_dot_product_attention(
                q[start : start + q_len].transpose(0, 1).unsqueeze(0),  # (1, H, q_len, D)
                keys.transpose(0, 1).unsqueeze(0),  # (1, Hkv, ctx, D)
                values.transpose(0, 1).unsqueeze(0),
                attn_mask=mask,
                is_causal=1 < q_len == ctx,  # a whole prompt: the plain causal (fast) path
                scale=scale,
                enable_gqa=gqa,
            )
            out[start : start + q_len] = o[0].transpose(0, 1)
            start += q_len
        return out

    def _decode(
        self,
        q: torch.Tensor,  # (S, H, D): one query per sequence
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
        gqa: bool,
    ) -> torch.Tensor:  # (S, H, D)
        block_size = kv_cache.shape[2]
        max_blocks = (meta.max_context_len + block_size - 1) // block_size
        tables = meta.block_tables[:, :max_blocks]  # (S, B)
        num_seqs, num_blocks = tables.shape
        kv = kv_cache.index_select(1, tables.flatten())  # (2, S*B, bs, Hkv, D)
        kv = kv.view(2, num_seqs, num_blocks * block_size, *kv_cache.shape[3:])  # (2, S, L, ..)
        pos = torch.arange(kv.shape[2], device=q.device)[None, :]
        valid = pos < meta.context_lens[:, None].to(pos.dtype)  # (S, L)
        kv.masked_fill_(~valid[None, :, :, None, None], 0.0)  # kv is a fresh copy
        o = F.scaled_dot_product_attention(
            q.unsqueeze(2),  # (S, H, 1, D)
            kv[0].transpose(1, 2),  # (S, Hkv, L, D)
            kv[1].transpose(1, 2),
            attn_mask=valid[:, None, None, :],  # (S, 1, 1, L)
            scale=scale,
            enable_gqa=gqa,
        )
        return o.squeeze(2)


class Attention(nn.Module):
    """One layer's attention: owns its slice of the KV cache (set by the model runner)."""

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale = scale
        self.kv_cache: torch.Tensor | None = None
        self.backend: AttentionBackend = TorchPagedAttention()

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        if self.kv_cache is None:
            raise RuntimeError("attention called before the model runner allocated the KV cache")
        return self.backend.forward(q, k, v, self.kv_cache, meta, self.scale)

    def forward_qkv(
        self,
        qkv: torch.Tensor,  # (T, H + 2*Hkv, D): a fused qkv projection's output, as heads
        cos: torch.Tensor,  # (T, 1, D) rope tables for the tokens' positions
        sin: torch.Tensor,
        meta: AttentionMetadata,
        q_norm: RMSNorm | None = None,  # per-head RMSNorm of q and k before rope (Qwen3)
        k_norm: RMSNorm | None = None,
    ) -> torch.Tensor:  # (T, H, D)
        """Optional q/k norm, rope, the K/V store and attention. A backend with its own
        `forward_qkv` (Triton: norm, rope and store are one kernel) takes it all."""
        if self.kv_cache is None:
            raise RuntimeError("attention called before the model runner allocated the KV cache")
        fused = getattr(self.backend, "forward_qkv", None)
        if fused is not None:
            norms = None if q_norm is None or k_norm is None else (q_norm, k_norm)
            return fused(qkv, cos, sin, norms, self.num_heads, self.kv_cache, meta, self.scale)
        heads, kv_heads = self.num_heads, self.num_kv_heads
        if q_norm is None or k_norm is None:
            # q and k share the token's angles: rotate them as one tensor
            qk = apply_rotary(qkv[:, : heads + kv_heads], cos, sin)
            q, k = qk.split([heads, kv_heads], dim=1)
        else:
            q = apply_rotary(q_norm(qkv[:, :heads]), cos, sin)  # (T, H, D)
            k = apply_rotary(k_norm(qkv[:, heads : heads + kv_heads]), cos, sin)
        return self.forward(q, k, qkv[:, heads + kv_heads :], meta)


def build_metadata(
    query_lens: list[int],
    context_lens: list[int],
    block_tables: list[list[int]],
    block_size: int,
    device: torch.device,
) -> AttentionMetadata:
    """Metadata for sequences whose new tokens are the last `query_lens[i]` of `context_lens[i]`."""
    slots: list[int] = []
    for q_len, ctx, table in zip(query_lens, context_lens, block_tables, strict=True):
        for pos in range(ctx - q_len, ctx):
            slots.append(table[pos // block_size] * block_size + pos % block_size)
    width = max((len(t) for t in block_tables), default=1) or 1
    padded = [t + [0] * (width - len(t)) for t in block_tables]
    cu = [0]
    for q_len in query_lens:
        cu.append(cu[-1] + q_len)

    def tensor(x, dtype):
        return to_device(x, dtype, device)

    return AttentionMetadata(
        slot_mapping=tensor(slots, torch.int64),
        cu_seqlens_q=tensor(cu, torch.int32),
        context_lens=tensor(context_lens, torch.int32),
        block_tables=tensor(padded, torch.int32),
        query_lens=list(query_lens),
        context_lens_host=list(context_lens),
        max_context_len=max(context_lens, default=0),
    )
