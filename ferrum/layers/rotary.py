"""Rotary position embedding (rope), with the scaled variants LLaMA 3.x and Qwen use.

The inverse frequencies are computed exactly as transformers' ROPE_INIT_FUNCTIONS do (default,
linear, llama3, yarn), then turned into one cos|sin table over every position the model may see.
The table is derived data: it lives in a non-persistent buffer rebuilt by `init_buffers()` on the
model's device (after a meta-device build is materialized), never in a checkpoint.

A model looks the table up once per forward for the batch's positions and hands the same (cos,
sin) to every layer; `apply_rotary` rotates the two halves of each head (the "neox"/HF layout).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ferrum.kernels import use_kernels

# YaRN defaults from the paper (and transformers): the ramp between extrapolated and
# interpolated frequencies runs from `beta_fast` down to `beta_slow` rotations.
YARN_BETA_FAST = 32.0
YARN_BETA_SLOW = 1.0


def default_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """(head_dim/2,) float32 inverse frequencies theta^(-2i/head_dim)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (theta**exponents)


def rope_frequencies(
    head_dim: int, theta: float, scaling: dict | None, max_positions: int
) -> tuple[torch.Tensor, float]:
    """(inv_freq (head_dim/2,) float32, attention factor applied to cos and sin)."""
    rope_type = scaling["rope_type"] if scaling else "default"
    inv_freq = default_inv_freq(head_dim, theta)
    if rope_type == "default":
        return inv_freq, 1.0
    assert scaling is not None
    if rope_type == "linear":
        return inv_freq / scaling["factor"], 1.0
    if rope_type == "llama3":
        return _llama3_inv_freq(inv_freq, scaling), 1.0
    if rope_type == "yarn":
        return _yarn(head_dim, theta, scaling, max_positions)
    raise ValueError(f"unknown rope type {rope_type!r}")  # TransformerConfig validated it


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3.1: long wavelengths divided by `factor`, short kept, a smooth blend between."""
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_context = scaling["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def _yarn(
    head_dim: int, theta: float, scaling: dict, max_positions: int
) -> tuple[torch.Tensor, float]:
    """YaRN: interpolate low frequencies, extrapolate high ones, scale attention by mscale."""
    original = scaling["original_max_position_embeddings"]
    factor = scaling.get("factor") or max_positions / original
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = _yarn_mscale(factor)
    beta_fast = scaling.get("beta_fast") or YARN_BETA_FAST
    beta_slow = scaling.get("beta_slow") or YARN_BETA_SLOW

    def correction_dim(rotations: float) -> float:
        # the dimension whose wavelength fits `rotations` times into the original context
        return (head_dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    dims = torch.arange(head_dim // 2, dtype=torch.float32)
    ramp = torch.clamp((dims - low) / (high - low), 0, 1)
    pos_freqs = theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    extrapolation = 1 - ramp  # 1: keep the original frequency, 0: interpolate it
    interpolated, extrapolated = 1.0 / (factor * pos_freqs), 1.0 / pos_freqs
    inv_freq = interpolated * (1 - extrapolation) + extrapolated * extrapolation
    return inv_freq, float(attention_factor)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


class RotaryEmbedding(nn.Module):
    """cos/sin of every position up to `max_positions`, looked up by position."""

    def __init__(
        self, head_dim: int, max_positions: int, theta: float, scaling: dict | None
    ) -> None:
        super().__init__()
        self.head_dim, self.max_positions = head_dim, max_positions
        self.theta, self.scaling = theta, scaling
        # (max_positions, head_dim): [cos | sin] of the head_dim/2 frequencies, attention-scaled
        table = torch.empty(max_positions, head_dim, dtype=torch.float32)
        self.register_buffer("cos_sin_cache", table, persistent=False)
        self._tables: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
        if not table.is_meta:
            self.init_buffers()

    def init_buffers(self) -> None:
        device = self.cos_sin_cache.device
        inv_freq, attention_factor = rope_frequencies(
            self.head_dim, self.theta, self.scaling, self.max_positions
        )
        t = torch.arange(self.max_positions, dtype=torch.float32, device=device)
        freqs = torch.outer(t, inv_freq.to(device))  # (P, D/2)
        self.cos_sin_cache = torch.cat(
            [freqs.cos() * attention_factor, freqs.sin() * attention_factor], dim=-1
        )
        self._tables = {}

    def forward(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (T, 1, head_dim) in `dtype`, for positions (T,): two views of one
        gather (a decode step of a small model pays per kernel, not per byte)."""
        both = self.table(dtype)[positions]  # (T, 2, D)
        return both[:, :1], both[:, 1:]

    def table(self, dtype: torch.dtype) -> torch.Tensor:
        """(max_positions, 2, head_dim) in `dtype`: [cos | cos] and [sin | sin], each rounded
        from float32 once (what expanding the float32 cache per step gives), made at first use."""
        cache = self.cos_sin_cache
        key = (dtype, cache.device)
        table = self._tables.get(key)
        if table is None:
            cos, sin = cache.chunk(2, dim=-1)
            table = torch.stack([cos.repeat(1, 2), sin.repeat(1, 2)], dim=1).to(dtype)
            self._tables = {key: table}  # the model runs in one dtype: keep only the latest
        return table


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each head of x (T, H, D) by its token's angle; cos/sin are (T, 1, D). On CUDA with
    triton installed this is one kernel (`ferrum.kernels.rotary`, same rounding)."""
    if use_kernels(x):
        from ferrum.kernels.rotary import rotary

        return rotary(x, cos, sin)
    return apply_rotary_torch(x, cos, sin)


def apply_rotary_torch(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The torch path of `apply_rotary` (the reference the kernel is checked against)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin
