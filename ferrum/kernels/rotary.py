"""Rotary embedding of several heads of one token per program (the HF "rotate half" layout).

out = x * cos + rotate_half(x) * sin with rotate_half(x) = [-x2, x1]. In a low-precision dtype
each product and the sum are rounded to that dtype, as the torch expression does, so the kernel
gives the torch path's numbers. The input may be a strided view (q and k of a fused qkv).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rotary_kernel(
    x_ptr,
    cos_ptr,
    sin_ptr,
    out_ptr,
    stride_xt,
    stride_xh,
    stride_ct,
    num_heads,
    HALF: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
    ROUND: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_HALF)[None, :]
    dm = d < HALF
    mask = (h < num_heads) & dm
    src = x_ptr + t * stride_xt + h * stride_xh + d
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    c1 = tl.load(cos_ptr + t * stride_ct + d, mask=dm, other=0.0).to(tl.float32)
    c2 = tl.load(cos_ptr + t * stride_ct + HALF + d, mask=dm, other=0.0).to(tl.float32)
    s1 = tl.load(sin_ptr + t * stride_ct + d, mask=dm, other=0.0).to(tl.float32)
    s2 = tl.load(sin_ptr + t * stride_ct + HALF + d, mask=dm, other=0.0).to(tl.float32)
    a1, b1 = x1 * c1, -x2 * s1
    a2, b2 = x2 * c2, x1 * s2
    if ROUND:
        dt = out_ptr.dtype.element_ty
        a1, b1 = a1.to(dt).to(tl.float32), b1.to(dt).to(tl.float32)
        a2, b2 = a2.to(dt).to(tl.float32), b2.to(dt).to(tl.float32)
    dst = out_ptr + t * num_heads * (2 * HALF) + h * (2 * HALF) + d
    tl.store(dst, (a1 + b1).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, (a2 + b2).to(out_ptr.dtype.element_ty), mask=mask)


def token_tables(
    cos: torch.Tensor, sin: torch.Tensor, tokens: int, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (T, 1, D) or (T, D), possibly views of one (T, 2, D) gather, as (T, D) tensors
    with unit inner stride and one shared token stride (what the kernels index)."""
    cos, sin = cos.reshape(tokens, dim), sin.reshape(tokens, dim)
    if cos.stride(1) != 1 or sin.stride() != cos.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    return cos, sin


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (T, H, D) rotated by cos/sin (T, 1, D) (already in x's dtype); a new contiguous tensor."""
    tokens, heads, dim = x.shape
    if x.stride(2) != 1:
        x = x.contiguous()
    cos, sin = token_tables(cos, sin, tokens, dim)
    out = torch.empty((tokens, heads, dim), dtype=x.dtype, device=x.device)
    if tokens:
        _rotary_kernel[(tokens,)](
            x, cos, sin, out, x.stride(0), x.stride(1), cos.stride(0), heads,
            HALF=dim // 2, BLOCK_H=triton.next_power_of_2(heads),
            BLOCK_HALF=triton.next_power_of_2(dim // 2), ROUND=x.dtype != torch.float32,
        )  # fmt: skip
    return out
