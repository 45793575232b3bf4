"""SiLU-and-mul: silu(gate) * up from the MLP's fused [gate | up] projection, in one pass.

In a low-precision dtype silu(gate) is rounded before the product, as the torch expression
`F.silu(gate) * up` does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ferrum.kernels import launch
from ferrum.kernels.launch import gdc_launch_dependents, gdc_wait

BLOCK = 1024  # output elements per program


@triton.jit
def _silu_and_mul_kernel(
    x_ptr,
    out_ptr,
    stride_xt,
    inter,
    BLOCK: tl.constexpr,
    ROUND: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    if USE_PDL:  # launched before the kernel ahead of it is done: wait for its writes
        gdc_wait()
        gdc_launch_dependents()
    t = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < inter
    gate = tl.load(x_ptr + t * stride_xt + offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + t * stride_xt + inter + offs, mask=mask, other=0.0).to(tl.float32)
    act = gate / (1.0 + tl.exp(-gate))
    if ROUND:
        act = act.to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + t * inter + offs, (act * up).to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x (..., 2I) -> (..., I)."""
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    if x.stride(-1) != 1:
        x = x.contiguous()
    tokens, inter = x.shape[0], x.shape[1] // 2
    out = torch.empty((tokens, inter), dtype=x.dtype, device=x.device)
    if tokens:
        grid = (tokens, triton.cdiv(inter, BLOCK))
        _silu_and_mul_kernel[grid](
            x, out, x.stride(0), inter, BLOCK=BLOCK, ROUND=x.dtype != torch.float32,
            **launch.options(),
        )  # fmt: skip
    return out.view(*lead, inter)
