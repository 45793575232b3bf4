"""RMSNorm, optionally fused with the residual add that precedes it in a pre-norm block.

`norm(x)` returns the normed x; `norm(x, residual)` adds first and returns (normed, x + residual),
so a fused GPU kernel can replace both steps behind the same call: on CUDA with triton installed
`forward` runs `ferrum.kernels.norm.rms_norm` (one pass, same rounding); `forward_torch` is the
reference path used everywhere else.
"""

from __future__ import annotations

import torch
from torch import nn

from ferrum.kernels import use_kernels


class RMSNorm(nn.Module):
    """y = x / rms(x) * weight over the last dimension, computed in float32 as transformers does."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return torch.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        # low precision: normalise in fp32, round to the input dtype, then scale (HF's order)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if use_kernels(x):
            from ferrum.kernels.norm import rms_norm

            return rms_norm(x, self.weight, self.eps, residual)
        return self.forward_torch(x, residual)

    def forward_torch(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            return self._norm(x)
        x = x + residual
        return self._norm(x), x
