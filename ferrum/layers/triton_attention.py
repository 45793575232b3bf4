"""The GPU attention backend: Triton kernels over the paged KV cache.

Each layer call stores the new K/V with one kernel (for a fused qkv, `forward_qkv`, the same
kernel also applies the q/k norm and rope; in a decode step of a batch small enough to split its
context, the decode kernel does all of that itself), then computes attention: a step where every
sequence has one new token runs the split-context decode kernel over the whole batch (this is the
path CUDA graphs capture: it reads only device tensors and its grid depends only on the batch
size); a step with prompt chunks runs the varlen prefill kernel over the sequences with more than
one new token and the decode kernel over the rest. What a step's layers share (which sequences
take which kernel, the split count) is worked out once, by the first layer, and kept on the
metadata object.

Computes the same function as `TorchPagedAttention`, which the kernel tests compare it with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ferrum.device import to_device
from ferrum.layers.attention import AttentionMetadata
from ferrum.layers.norm import RMSNorm

_PLAN_ATTR = "_triton_plan"
# decode steps: norm, rope and the store inside the decode kernel (gpu_fastpath turns it off to
# time the two-kernel way in the same run), where the batch is small enough for its context to be
# split (the step is a latency chain there; at batch 256 the two-kernel way measured faster)
FUSED_DECODE = True
FUSED_DECODE_MIN_SPLITS = 2


@dataclass
class StepPlan:
    """How one step's sequences split between the two kernels."""

    num_splits: int  # context splits of the decode kernel
    decode_seqs: torch.Tensor | None  # (N,) int32, or None: every sequence decodes
    prefill_seqs: torch.Tensor | None  # (P,) int32 sequences with more than one new token
    max_prefill_len: int  # most new tokens of one prefill sequence


def plan_step(meta: AttentionMetadata, num_kv_heads: int, device: torch.device) -> StepPlan:
    """The step's plan, computed by the first layer that asks and cached on `meta`."""
    plan = getattr(meta, _PLAN_ATTR, None)
    if plan is not None:
        return plan
    from ferrum.kernels.paged_decode import device_sms, num_splits_for

    if meta.is_decode:
        splits = num_splits_for(meta.num_seqs, num_kv_heads, device_sms(device))
        plan = StepPlan(splits, None, None, 0)
    else:
        decode = [i for i, n in enumerate(meta.query_lens) if n == 1]
        prefill = [i for i, n in enumerate(meta.query_lens) if n > 1]
        splits = num_splits_for(max(len(decode), 1), num_kv_heads, device_sms(device))
        plan = StepPlan(
            splits,
            to_device(decode, torch.int32, device),
            to_device(prefill, torch.int32, device),
            max((meta.query_lens[i] for i in prefill), default=0),
        )
    setattr(meta, _PLAN_ATTR, plan)
    return plan


class TritonPagedAttention:
    """Attention backend on Triton kernels (CUDA; the CPU interpreter in tests)."""

    def forward(
        self,
        q: torch.Tensor,  # (T, H, D)
        k: torch.Tensor,  # (T, Hkv, D)
        v: torch.Tensor,  # (T, Hkv, D)
        kv_cache: torch.Tensor,  # (2, num_blocks, block_size, Hkv, D)
        meta: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:  # (T, H, D)
        from ferrum.kernels.store_kv import store_kv

        store_kv(k, v, kv_cache, meta.slot_mapping)
        return self._attend(q, kv_cache, meta, scale)

    def forward_qkv(
        self,
        qkv: torch.Tensor,  # (T, H + 2*Hkv, D)
        cos: torch.Tensor,  # (T, 1, D)
        sin: torch.Tensor,
        norms: tuple[RMSNorm, RMSNorm] | None,  # q and k norms (Qwen3), or None
        num_heads: int,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:  # (T, H, D)
        """q/k norm, rope and the K/V store in one kernel, then attention; a decode step of a
        small batch (its context split) does all of it in the decode kernel."""
        from ferrum.kernels.qk_rope_store import qk_rope_store

        q_w, k_w, eps = (
            (None, None, 0.0) if norms is None else (*(n.weight for n in norms), norms[0].eps)
        )
        dim = qkv.shape[2]
        power_of_two = dim >= 16 and dim & (dim - 1) == 0
        plan = plan_step(meta, kv_cache.shape[3], qkv.device) if meta.is_decode else None
        if (
            FUSED_DECODE
            and plan is not None
            and plan.num_splits >= FUSED_DECODE_MIN_SPLITS
            and power_of_two
            and kv_cache.is_contiguous()
        ):
            from ferrum.kernels.paged_decode import paged_decode_qkv

            return paged_decode_qkv(
                qkv, cos, sin, q_w, k_w, eps, num_heads, kv_cache, meta.slot_mapping,
                meta.cu_seqlens_q, meta.context_lens, meta.block_tables, scale, plan.num_splits,
            )  # fmt: skip
        q = qk_rope_store(qkv, cos, sin, q_w, k_w, eps, num_heads, kv_cache, meta.slot_mapping)
        return self._attend(q, kv_cache, meta, scale)

    def _attend(
        self, q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float
    ) -> torch.Tensor:
        from ferrum.kernels.paged_decode import paged_decode_attention
        from ferrum.kernels.paged_prefill import paged_prefill_attention

        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        plan = plan_step(meta, kv_cache.shape[3], q.device)
        common = (meta.cu_seqlens_q, meta.context_lens, meta.block_tables, scale)
        if plan.prefill_seqs is not None and plan.max_prefill_len > 0:
            paged_prefill_attention(
                q, kv_cache, out, *common, seq_ids=plan.prefill_seqs,
                max_query_len=plan.max_prefill_len,
            )  # fmt: skip
        if plan.decode_seqs is None or plan.decode_seqs.numel():
            paged_decode_attention(
                q, kv_cache, out, *common, num_splits=plan.num_splits,
                seq_ids=plan.decode_seqs,
            )  # fmt: skip
        return out
