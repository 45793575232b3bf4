"""The small causal transformers inside the speech codec.

Two flavours share one layer shape (pre-norm attention and MLP, each residual branch multiplied
by a learnt per-channel layer scale, rotary positions counted from 0 for each call):
- the decoder's pre-transformer: RMSNorm, SwiGLU MLP, grouped-query attention restricted to a
  sliding window, with linear projections in and out of it;
- the encoder's (Mimi's) transformer: LayerNorm with bias, GELU MLP, plain causal attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROPE_HALF = 2  # rotary pairs: the first half of a head rotates against the second


@dataclass(frozen=True)
class TransformerShape:
    """What a codec transformer layer needs to know."""

    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float
    norm_eps: float
    gated_mlp: bool  # SwiGLU (decoder) or GELU fc1/fc2 (encoder)
    rms_norm: bool  # RMSNorm without bias (decoder) or LayerNorm with bias (encoder)
    attention_bias: bool = False
    sliding_window: int | None = None  # frames a query sees, itself included; None: all


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * x


def rotary_tables(length: int, head_dim: int, theta: float, device: torch.device) -> Tensor:
    """(2, T, head_dim) cos and sin of positions 0..length-1, in float32."""
    inv_freq = 1.0 / theta ** (
        torch.arange(0, head_dim, ROPE_HALF, dtype=torch.int64, device=device).float() / head_dim
    )
    freqs = torch.arange(length, device=device).float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, head_dim)
    return torch.stack((emb.cos(), emb.sin()))


def apply_rotary(x: Tensor, rope: Tensor) -> Tensor:  # x: (B, H, T, D)
    cos, sin = rope[0].to(x.dtype), rope[1].to(x.dtype)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def causal_mask(length: int, window: int | None, device: torch.device) -> Tensor:
    """(T, T) bool, True where query i may attend key j: j <= i, and i - j < window."""
    i = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    allowed = j <= i
    if window is not None:
        allowed = allowed & (j > i - window)
    return allowed


class Attention(nn.Module):
    def __init__(self, shape: TransformerShape) -> None:
        super().__init__()
        self.shape = shape
        inner, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
        bias = shape.attention_bias
        self.q_proj = nn.Linear(shape.hidden_size, inner, bias=bias)
        self.k_proj = nn.Linear(shape.hidden_size, kv, bias=bias)
        self.v_proj = nn.Linear(shape.hidden_size, kv, bias=bias)
        self.o_proj = nn.Linear(inner, shape.hidden_size, bias=bias)

    def forward(self, x: Tensor, rope: Tensor, mask: Tensor) -> Tensor:  # x: (B, T, C)
        b, t, _ = x.shape
        s = self.shape
        q = self.q_proj(x).view(b, t, s.num_heads, s.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(b, t, s.num_kv_heads, s.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, s.num_kv_heads, s.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, rope), apply_rotary(k, rope)
        groups = s.num_heads // s.num_kv_heads
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, D)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class Mlp(nn.Module):
    def __init__(self, shape: TransformerShape) -> None:
        super().__init__()
        self.gated = shape.gated_mlp
        if self.gated:
            self.gate_proj = nn.Linear(shape.hidden_size, shape.intermediate_size, bias=False)
            self.up_proj = nn.Linear(shape.hidden_size, shape.intermediate_size, bias=False)
            self.down_proj = nn.Linear(shape.intermediate_size, shape.hidden_size, bias=False)
        else:
            self.fc1 = nn.Linear(shape.hidden_size, shape.intermediate_size, bias=False)
            self.fc2 = nn.Linear(shape.intermediate_size, shape.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.gated:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.fc2(F.gelu(self.fc1(x)))


def make_norm(shape: TransformerShape) -> nn.Module:
    if shape.rms_norm:
        return RMSNorm(shape.hidden_size, shape.norm_eps)
    return nn.LayerNorm(shape.hidden_size, eps=shape.norm_eps)


class TransformerLayer(nn.Module):
    def __init__(self, shape: TransformerShape) -> None:
        super().__init__()
        self.self_attn = Attention(shape)
        self.mlp = Mlp(shape)
        self.input_layernorm = make_norm(shape)
        self.post_attention_layernorm = make_norm(shape)
        self.self_attn_layer_scale = LayerScale(shape.hidden_size)
        self.mlp_layer_scale = LayerScale(shape.hidden_size)

    def forward(self, x: Tensor, rope: Tensor, mask: Tensor) -> Tensor:  # (B, T, C)
        x = x + self.self_attn_layer_scale(self.self_attn(self.input_layernorm(x), rope, mask))
        return x + self.mlp_layer_scale(self.mlp(self.post_attention_layernorm(x)))


class CodecTransformer(nn.Module):
    """A stack of layers over (B, T, C) frames; positions and the mask are built per call."""

    def __init__(self, shape: TransformerShape, num_layers: int) -> None:
        super().__init__()
        self.shape = shape
        self.layers = nn.ModuleList(TransformerLayer(shape) for _ in range(num_layers))

    def run_layers(self, x: Tensor) -> Tensor:  # (B, T, C)
        t = x.shape[1]
        rope = rotary_tables(t, self.shape.head_dim, self.shape.rope_theta, x.device)
        mask = causal_mask(t, self.shape.sliding_window, x.device)
        for layer in self.layers:
            x = layer(x, rope, mask)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.run_layers(x)


class DecoderPreTransformer(CodecTransformer):
    """The decoder's transformer, with its projections from and back to the latent width."""

    def __init__(self, shape: TransformerShape, num_layers: int, latent_dim: int) -> None:
        super().__init__(shape, num_layers)
        self.input_proj = nn.Linear(latent_dim, shape.hidden_size)
        self.output_proj = nn.Linear(shape.hidden_size, latent_dim)
        self.norm = RMSNorm(shape.hidden_size, shape.norm_eps)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, latent) -> (B, T, latent)
        return self.output_proj(self.norm(self.run_layers(self.input_proj(x))))
