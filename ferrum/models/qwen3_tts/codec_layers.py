"""Convolution building blocks of the Qwen3-TTS speech codec (both directions).

Every convolution is causal: the left side is padded by the kernel's reach minus the stride, and
the right side only as much as makes the last window complete, so that frame t never depends on
samples after it. A transposed convolution trims its right overhang for the same reason.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SNAKE_EPS = 1e-9  # keeps 1 / exp(beta) finite
CONVNEXT_KERNEL = 7  # depthwise kernel of a ConvNeXt block
CONVNEXT_EXPANSION = 4  # pointwise hidden width, times the channels
CONVNEXT_NORM_EPS = 1e-6
RESIDUAL_KERNEL = 7  # the decoder's residual units
RESIDUAL_DILATIONS = (1, 3, 9)


class CausalConv1d(nn.Module):
    """Conv1d padded on the left (and minimally on the right) so outputs never see the future."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        pad_mode: str = "constant",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups,
            bias=bias,
        )  # fmt: skip
        self.stride = stride
        self.reach = (kernel_size - 1) * dilation + 1  # effective kernel size
        self.left_pad = self.reach - stride
        self.pad_mode = pad_mode

    def extra_right_pad(self, length: int) -> int:
        """Zeros that complete the last stride window."""
        frames = math.ceil((length - self.reach + self.left_pad) / self.stride + 1)
        return (frames - 1) * self.stride + self.reach - self.left_pad - length

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T) -> (B, C', ceil(T / stride))
        pads = (self.left_pad, self.extra_right_pad(x.shape[-1]))
        # "constant" pads zeros; Mimi's downsampling conv repeats the edge frame instead
        return self.conv(F.pad(x, pads, mode=self.pad_mode))


class CausalConvTranspose1d(nn.Module):
    """ConvTranspose1d whose right overhang (kernel - stride samples) is cut off."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride)
        self.right_trim = kernel_size - stride

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T) -> (B, C', T * stride)
        x = self.conv(x)
        return x[..., : x.shape[-1] - self.right_trim] if self.right_trim > 0 else x


class SnakeBeta(nn.Module):
    """x + sin^2(a x) / b, with a = exp(alpha) and b = exp(beta) per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T)
        alpha = self.alpha.exp()[None, :, None]
        beta = self.beta.exp()[None, :, None]
        return x + torch.sin(x * alpha).pow(2) / (beta + SNAKE_EPS)


class ConvNeXtBlock(nn.Module):
    """Depthwise causal conv, LayerNorm, pointwise MLP, scaled residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = CausalConv1d(dim, dim, CONVNEXT_KERNEL, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=CONVNEXT_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, CONVNEXT_EXPANSION * dim)
        self.pwconv2 = nn.Linear(CONVNEXT_EXPANSION * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T)
        h = self.dwconv(x).transpose(1, 2)  # (B, T, C)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class ResidualUnit(nn.Module):
    """Snake, dilated causal conv, snake, 1x1 conv, plus the input."""

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.act1 = SnakeBeta(dim)
        self.conv1 = CausalConv1d(dim, dim, RESIDUAL_KERNEL, dilation=dilation)
        self.act2 = SnakeBeta(dim)
        self.conv2 = CausalConv1d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T)
        return x + self.conv2(self.act2(self.conv1(self.act1(x))))


class DecoderBlock(nn.Module):
    """One upsampling stage of the waveform decoder: snake, transposed conv (halving the
    channels), three residual units of growing dilation."""

    def __init__(self, in_dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            SnakeBeta(in_dim),
            CausalConvTranspose1d(in_dim, out_dim, 2 * stride, stride),
        ]
        layers += [ResidualUnit(out_dim, d) for d in RESIDUAL_DILATIONS]
        self.block = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:  # (B, in_dim, T) -> (B, out_dim, T * stride)
        for layer in self.block:
            x = layer(x)
        return x
