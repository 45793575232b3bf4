"""Write the new tokens' K and V into their paged-cache slots (one program per token).

The cache is (2, num_blocks, block_size, Hkv, D) and a slot is block_id * block_size + offset,
so slot s of plane p starts at element p * plane + s * Hkv * D. A negative slot means "no
slot" (the padding rows of a CUDA-graph batch) and writes nothing.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _store_kv_kernel(
    k_ptr,
    v_ptr,
    cache_ptr,
    slot_ptr,
    stride_kt,
    stride_vt,
    plane,  # elements in one of the K / V planes of the cache
    HD: tl.constexpr,  # Hkv * D: one token's K (or V), contiguous in both source and cache
    BLOCK: tl.constexpr,
):
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot >= 0:
        offs = tl.arange(0, BLOCK)
        mask = offs < HD
        k = tl.load(k_ptr + t * stride_kt + offs, mask=mask)
        v = tl.load(v_ptr + t * stride_vt + offs, mask=mask)
        dst = cache_ptr + slot * HD + offs
        tl.store(dst, k.to(cache_ptr.dtype.element_ty), mask=mask)
        tl.store(dst + plane, v.to(cache_ptr.dtype.element_ty), mask=mask)


def _token_rows(x: torch.Tensor) -> torch.Tensor:
    """x (T, Hkv, D) with each token's Hkv * D elements contiguous (a view of qkv is fine)."""
    if x.stride(2) != 1 or x.stride(1) != x.shape[2]:
        x = x.contiguous()
    return x


def store_kv(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, slots: torch.Tensor) -> None:
    """Write k, v (T, Hkv, D) into kv_cache (2, num_blocks, block_size, Hkv, D) at `slots` (T,);
    negative slots are skipped."""
    tokens = k.shape[0]
    if tokens == 0:
        return
    if not kv_cache.is_contiguous():
        raise ValueError("store_kv needs a contiguous KV cache")
    k, v = _token_rows(k), _token_rows(v)
    hd = k.shape[1] * k.shape[2]
    _store_kv_kernel[(tokens,)](
        k,
        v,
        kv_cache,
        slots,
        k.stride(0),
        v.stride(0),
        kv_cache[0].numel(),
        HD=hd,
        BLOCK=triton.next_power_of_2(hd),
    )
