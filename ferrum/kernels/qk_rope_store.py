"""The step between the qkv projection and attention, as one kernel: optional per-head RMSNorm
of q and k (Qwen3), rotary embedding of q and k, and the store of k and v into the paged cache.

On the torch path these are five launches per layer (two norms, two rotaries, the store); in a
decode step each is a microsecond-scale kernel, so together they cost more than their bytes.
One program handles one token: every q head, every k head and every v head of its row of the
fused qkv tensor (T, H + 2*Hkv, D). q comes back as a new (T, H, D) tensor; k and v go only to
the cache (a negative slot, a padding row of a graph batch, stores nothing).

Rounding follows the separate kernels (`norm.py`, `rotary.py`) and so the torch layers: in a
low-precision dtype the normalized row is rounded before the weight, the weighted row after it,
and each rotary product and their sum are rounded, as the torch expressions do.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ferrum.kernels import launch
from ferrum.kernels.launch import gdc_launch_dependents, gdc_wait
from ferrum.kernels.rotary import token_tables


@triton.jit
def _norm_rope(
    x1,
    x2,  # (BLOCK_H, BLOCK_HALF) float32: the two halves of each head
    w_ptr,
    c1,
    c2,
    s1,
    s2,
    d,
    dmask,
    eps,
    dt: tl.constexpr,
    D: tl.constexpr,
    HALF: tl.constexpr,
    QK_NORM: tl.constexpr,
    ROUND: tl.constexpr,
):
    if QK_NORM:
        rstd = 1.0 / tl.sqrt((tl.sum(x1 * x1, 1) + tl.sum(x2 * x2, 1)) / D + eps)
        x1 = x1 * rstd[:, None]
        x2 = x2 * rstd[:, None]
        if ROUND:
            x1 = x1.to(dt).to(tl.float32)
            x2 = x2.to(dt).to(tl.float32)
        x1 = x1 * tl.load(w_ptr + d, mask=dmask, other=0.0).to(tl.float32)
        x2 = x2 * tl.load(w_ptr + HALF + d, mask=dmask, other=0.0).to(tl.float32)
        if ROUND:  # the norm's output is a tensor of the model dtype
            x1 = x1.to(dt).to(tl.float32)
            x2 = x2.to(dt).to(tl.float32)
    a1, b1 = x1 * c1, -x2 * s1
    a2, b2 = x2 * c2, x1 * s2
    if ROUND:
        a1, b1 = a1.to(dt).to(tl.float32), b1.to(dt).to(tl.float32)
        a2, b2 = a2.to(dt).to(tl.float32), b2.to(dt).to(tl.float32)
    return a1 + b1, a2 + b2


@triton.jit
def _qk_rope_store_kernel(
    qkv_ptr,
    cos_ptr,
    sin_ptr,
    qw_ptr,
    kw_ptr,
    q_out,
    cache_ptr,
    slot_ptr,
    stride_t,
    stride_h,
    stride_ct,
    plane,  # elements in one of the K / V planes of the cache
    num_heads,
    num_kv_heads,
    eps,
    D: tl.constexpr,
    HALF: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_KV: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
    QK_NORM: tl.constexpr,
    ROUND: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    if USE_PDL:  # launched before the kernel ahead of it is done: wait for its writes
        gdc_wait()
        gdc_launch_dependents()
    t = tl.program_id(0).to(tl.int64)
    dt = q_out.dtype.element_ty
    d = tl.arange(0, BLOCK_HALF)[None, :]
    dmask = d < HALF
    row = qkv_ptr + t * stride_t
    c1 = tl.load(cos_ptr + t * stride_ct + d, mask=dmask, other=0.0).to(tl.float32)
    c2 = tl.load(cos_ptr + t * stride_ct + HALF + d, mask=dmask, other=0.0).to(tl.float32)
    s1 = tl.load(sin_ptr + t * stride_ct + d, mask=dmask, other=0.0).to(tl.float32)
    s2 = tl.load(sin_ptr + t * stride_ct + HALF + d, mask=dmask, other=0.0).to(tl.float32)

    # q: every query head of the token
    h = tl.arange(0, BLOCK_H)[:, None]
    mask = (h < num_heads) & dmask
    src = row + h * stride_h + d
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    y1, y2 = _norm_rope(x1, x2, qw_ptr, c1, c2, s1, s2, d, dmask, eps, dt, D, HALF, QK_NORM, ROUND)
    dst = q_out + t * num_heads * D + h * D + d
    tl.store(dst, y1.to(dt), mask=mask)
    tl.store(dst + HALF, y2.to(dt), mask=mask)

    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot >= 0:
        # k: rotated (and normed) into the cache; v: copied
        g = tl.arange(0, BLOCK_KV)[:, None]
        kmask = (g < num_kv_heads) & dmask
        ksrc = row + (num_heads + g) * stride_h + d
        k1 = tl.load(ksrc, mask=kmask, other=0.0).to(tl.float32)
        k2 = tl.load(ksrc + HALF, mask=kmask, other=0.0).to(tl.float32)
        # new names: Triton's compiler refuses a branch that re-binds a name with a new shape
        r1, r2 = _norm_rope(
            k1, k2, kw_ptr, c1, c2, s1, s2, d, dmask, eps, dt, D, HALF, QK_NORM, ROUND
        )
        cdt = cache_ptr.dtype.element_ty
        kdst = cache_ptr + slot * num_kv_heads * D + g * D + d
        tl.store(kdst, r1.to(dt).to(cdt), mask=kmask)
        tl.store(kdst + HALF, r2.to(dt).to(cdt), mask=kmask)
        vsrc = row + (num_heads + num_kv_heads + g) * stride_h + d
        v1 = tl.load(vsrc, mask=kmask, other=0.0)
        v2 = tl.load(vsrc + HALF, mask=kmask, other=0.0)
        tl.store(kdst + plane, v1.to(cdt), mask=kmask)
        tl.store(kdst + plane + HALF, v2.to(cdt), mask=kmask)


def qk_rope_store(
    qkv: torch.Tensor,  # (T, H + 2*Hkv, D): the fused projection's output, as heads
    cos: torch.Tensor,  # (T, 1, D) or (T, D), in qkv's dtype
    sin: torch.Tensor,
    q_weight: torch.Tensor | None,  # (D,) q norm weight; None: no q/k norm
    k_weight: torch.Tensor | None,
    eps: float,
    num_heads: int,
    kv_cache: torch.Tensor,  # (2, num_blocks, block_size, Hkv, D), contiguous
    slots: torch.Tensor,  # (T,) int64 cache slots; negative: store nothing
) -> torch.Tensor:  # (T, H, D): q, normed and rotated
    tokens, width, dim = qkv.shape
    num_kv_heads = (width - num_heads) // 2
    if qkv.stride(2) != 1:
        qkv = qkv.contiguous()
    if not kv_cache.is_contiguous():
        raise ValueError("qk_rope_store needs a contiguous KV cache")
    cos, sin = token_tables(cos, sin, tokens, dim)
    q = torch.empty((tokens, num_heads, dim), dtype=qkv.dtype, device=qkv.device)
    if tokens:
        qk_norm = q_weight is not None
        _qk_rope_store_kernel[(tokens,)](
            qkv, cos, sin, q_weight if qk_norm else cos, k_weight if qk_norm else cos, q,
            kv_cache, slots, qkv.stride(0), qkv.stride(1), cos.stride(0), kv_cache[0].numel(),
            num_heads, num_kv_heads, eps,
            D=dim, HALF=dim // 2, BLOCK_H=triton.next_power_of_2(num_heads),
            BLOCK_KV=triton.next_power_of_2(num_kv_heads),
            BLOCK_HALF=triton.next_power_of_2(dim // 2), QK_NORM=qk_norm,
            ROUND=qkv.dtype != torch.float32, **launch.options(),
        )  # fmt: skip
    return q
