"""Gated activations: the MLP's fused gate|up projection output goes in, the product comes out.

On CUDA with triton installed the product is one kernel (`ferrum.kernels.activation`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ferrum.kernels import use_kernels


class SiluAndMul(nn.Module):
    """silu(gate) * up, where the input is [gate | up] along the last dimension."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, 2I) -> (T, I)
        if use_kernels(x):
            from ferrum.kernels.activation import silu_and_mul

            return silu_and_mul(x)
        return self.forward_torch(x)

    def forward_torch(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up
