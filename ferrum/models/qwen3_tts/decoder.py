"""The Qwen3-style decoder stack that both the talker and the code predictor are made of, with a
plain KV cache for a left-padded batch.

Pre-norm layers: RMSNorm, grouped-query attention with RMSNorm on each query/key head and rotary
positions, RMSNorm, SwiGLU MLP. The talker's reference uses "multimodal" rotary (three position
axes, each owning a section of the head) but feeds speech the same position on all three axes,
which makes it exactly the ordinary rotary embedding used here.

The cache holds each layer's keys and values for every slot of the batch, left padding included;
`KVCache.valid` says which slots hold a real token, so padding is never attended to. A padded
query still attends to itself, which keeps its (discarded) output finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ferrum.models.qwen3_tts.config import DecoderConfig


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far: per layer (B, H_kv, S, head_dim)."""

    keys: list[Tensor]
    values: list[Tensor]
    valid: Tensor  # (B, S) bool: the slot holds a real token (not left padding)

    @property
    def length(self) -> int:
        return int(self.valid.shape[1])


class RMSNorm(nn.Module):
    """x / rms(x) * weight, normalised in float32 as transformers' Qwen3 does."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rotary_tables(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos, sin (B, T, head_dim) float32 for integer positions (B, T)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float()
    inv_freq = 1.0 / (theta ** (exponents / head_dim))  # (head_dim / 2,)
    freqs = positions.float()[..., None] * inv_freq  # (B, T, head_dim / 2)
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the two halves of each head: x (B, H, T, D), cos/sin (B, 1, T, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = config.num_heads, config.num_kv_heads
        self.head_dim = config.head_dim
        hidden = config.hidden_size
        q_dim, kv_dim = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
        self.q_proj = nn.Linear(hidden, q_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_dim, bias=False)
        self.o_proj = nn.Linear(q_dim, hidden, bias=False)
        self.q_norm = RMSNorm(config.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(config.head_dim, config.rms_norm_eps)

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor],
        mask: Tensor,
        past: tuple[Tensor, Tensor] | None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x (B, T, hidden), mask (B, 1, T, S) bool -> (B, T, hidden) and this layer's K/V."""
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, t, -1, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, t, -1, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(b, t, -1, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        cos, sin = (r.to(x.dtype)[:, None] for r in rotary)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, enable_gqa=self.num_heads != self.num_kv_heads
        )  # (B, H, T, D)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1)), (k, v)


class MLP(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        x: Tensor,
        rotary: tuple[Tensor, Tensor],
        mask: Tensor,
        past: tuple[Tensor, Tensor] | None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        attended, kv = self.self_attn(self.input_layernorm(x), rotary, mask, past)
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), kv


class Decoder(nn.Module):
    """`layers` and the final `norm`; embeddings and heads belong to the model that owns it."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, embeds: Tensor, positions: Tensor, valid: Tensor, cache: KVCache | None
    ) -> tuple[Tensor, KVCache]:
        """embeds (B, T, hidden) at positions (B, T), `valid` (B, T) marks real tokens ->
        normed hidden states (B, T, hidden) and the cache extended by these T tokens."""
        past_len = cache.length if cache is not None else 0
        keys_valid = valid if cache is None else torch.cat((cache.valid, valid), dim=1)  # (B, S)
        t, s = embeds.shape[1], keys_valid.shape[1]
        query_at = torch.arange(t, device=embeds.device)[:, None] + past_len  # (T, 1)
        key_at = torch.arange(s, device=embeds.device)[None, :]  # (1, S)
        mask = (keys_valid[:, None, :] & (key_at <= query_at)) | (key_at == query_at)
        mask = mask[:, None]  # (B, 1, T, S)
        rotary = rotary_tables(positions, self.config.head_dim, self.config.rope_theta)
        x = embeds
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            past = (cache.keys[i], cache.values[i]) if cache is not None else None
            x, (k, v) = layer(x, rotary, mask, past)
            keys.append(k)
            values.append(v)
        return self.norm(x), KVCache(keys, values, keys_valid)
