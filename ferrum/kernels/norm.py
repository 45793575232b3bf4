"""RMSNorm, optionally with the residual add before it, as one pass over each row.

Numerics follow `ferrum.layers.norm.RMSNorm` (and transformers): the sum x + residual is
rounded to the model dtype (it is the new residual stream), the row is normalized in float32,
rounded to the model dtype, then multiplied by the weight and rounded again. Rows may be heads
of a strided view, e.g. q of a fused qkv tensor (the Qwen3 q/k norm): the input is (A, B, D)
with any strides over A and B.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ferrum.kernels import launch
from ferrum.kernels.launch import gdc_launch_dependents, gdc_wait


@triton.jit
def _rms_norm_kernel(
    x_ptr,
    res_ptr,
    w_ptr,
    out_ptr,
    res_out_ptr,
    stride_xa,
    stride_xb,
    inner,  # B: rows per outer index
    eps,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ROUND: tl.constexpr,  # low-precision dtype: round the normalized row before the weight
    USE_PDL: tl.constexpr,
):
    if USE_PDL:  # launched before the kernel ahead of it is done: wait for its writes
        gdc_wait()
        gdc_launch_dependents()
    r = tl.program_id(0).to(tl.int64)
    a = r // inner
    b = r % inner
    d = tl.arange(0, BLOCK_D)
    mask = d < D
    x = tl.load(x_ptr + a * stride_xa + b * stride_xb + d, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x = x + tl.load(res_ptr + r * D + d, mask=mask, other=0.0).to(tl.float32)
        x = x.to(res_out_ptr.dtype.element_ty)
        tl.store(res_out_ptr + r * D + d, x, mask=mask)
        x = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 0) / D + eps)
    y = x * rstd
    if ROUND:
        y = y.to(out_ptr.dtype.element_ty).to(tl.float32)
    y = y * tl.load(w_ptr + d, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + r * D + d, y.to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(
    x: torch.Tensor,  # (..., D): (T, D), or (T, H, D) heads of a strided view
    weight: torch.Tensor,  # (D,)
    eps: float,
    residual: torch.Tensor | None = None,  # same shape as x: added first when given
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """normed, or (normed, x + residual) when `residual` is given; outputs are contiguous."""
    dim = x.shape[-1]
    if x.stride(-1) != 1 or x.dim() > 3:
        x = x.contiguous()
    x3 = x if x.dim() == 3 else x.reshape(-1, 1, dim)  # (A, B, D)
    rows = x3.shape[0] * x3.shape[1]
    out_dtype = torch.promote_types(weight.dtype, x.dtype)
    out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    res_out = out
    if residual is not None:
        residual = residual.contiguous()
        res_out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if rows:
        _rms_norm_kernel[(rows,)](
            x3, residual if residual is not None else x3, weight, out, res_out,
            x3.stride(0), x3.stride(1), x3.shape[1], eps,
            D=dim, BLOCK_D=triton.next_power_of_2(dim), HAS_RESIDUAL=residual is not None,
            ROUND=x.dtype != torch.float32, num_warps=4 if dim <= 2048 else 8, **launch.options(),
        )  # fmt: skip
    return out if residual is None else (out, res_out)
