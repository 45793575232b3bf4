"""A plain causal decoder (Qwen3 / Qwen2 / LLaMA / Mistral) for embedding models, no KV cache.

Design note: embedding a text is one forward, so this module skips the LLM engine's paged KV
cache. Like `ferrum.models.bert`, a batch is *packed*: the tokens of all sequences lie end to end
as one (N, D) matrix, so the linear layers compute no padding. Attention scatters q/k/v into a
right-padded (B, H, T_max, Dh) grid where a causal mask alone is exact: each row's real tokens
are its prefix, so a real query only ever sees real keys (pad rows are computed, then dropped).
Left or right padding in the reference therefore gives the same states: rope depends only on
the distance between positions, and here every sequence simply starts at position 0.

Weight names are transformers' `Qwen3Model` / `LlamaModel` names, with or without the `model.`
prefix a `*ForCausalLM` checkpoint adds; an `lm_head` is not loaded.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ferrum.layers.norm import RMSNorm
from ferrum.layers.rotary import RotaryEmbedding, apply_rotary
from ferrum.models.bert import PackedLayout, positions_of
from ferrum.models.config import TransformerConfig

# config.json model_type → the causal-LM architecture whose traits `TransformerConfig` knows
CAUSAL_LM_BY_MODEL_TYPE = {
    "qwen3": "Qwen3ForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
}


def decoder_config(hf: dict[str, Any]) -> TransformerConfig:
    """TransformerConfig for a decoder saved as a bare `*Model` (as embedding checkpoints are)
    or as a `*ForCausalLM`: both share one set of hyperparameters."""
    archs = hf.get("architectures") or []
    arch = archs[0] if archs else CAUSAL_LM_BY_MODEL_TYPE.get(hf.get("model_type", ""), "")
    if arch.endswith("Model"):
        arch = arch.removesuffix("Model") + "ForCausalLM"
    return TransformerConfig.from_hf({**hf, "architectures": [arch]})


def causal_varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: PackedLayout
) -> torch.Tensor:
    """Causal attention of packed sequences: q (N, H, Dh), k/v (N, KV, Dh) → (N, H·Dh)."""
    batch, t_max = len(layout.seq_lens), layout.max_len

    def to_grid(x: torch.Tensor) -> torch.Tensor:
        grid = x.new_zeros(batch * t_max, *x.shape[1:])
        grid.index_copy_(0, layout.grid_index, x)
        return grid.view(batch, t_max, *x.shape[1:]).transpose(1, 2)  # (B, heads, T, Dh)

    gqa = q.shape[1] != k.shape[1]
    out = F.scaled_dot_product_attention(
        to_grid(q), to_grid(k), to_grid(v), is_causal=True, enable_gqa=gqa
    )  # (B, H, T, Dh)
    out = out.transpose(1, 2).reshape(batch * t_max, -1)
    return out.index_select(0, layout.grid_index)  # (N, H·Dh)


class DecoderAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.num_kv_heads = cfg.num_kv_heads  # fewer than num_heads: grouped-query attention
        self.head_dim = cfg.head_dim
        q_width, kv_width = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, q_width, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, kv_width, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, kv_width, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(q_width, cfg.hidden_size, bias=cfg.attention_out_bias)
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm:  # Qwen3: per-head RMSNorm on q and k before rope
            self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: PackedLayout
    ) -> torch.Tensor:
        n = x.shape[0]
        q = self.q_proj(x).view(n, self.num_heads, self.head_dim)  # (N, H, Dh)
        k = self.k_proj(x).view(n, self.num_kv_heads, self.head_dim)  # (N, KV, Dh)
        v = self.v_proj(x).view(n, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = cast(torch.Tensor, self.q_norm(q)), cast(torch.Tensor, self.k_norm(k))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return self.o_proj(causal_varlen_attention(q, k, v, layout))  # (N, D)


class DecoderMLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d, hidden = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(d, hidden, bias=cfg.mlp_bias)
        self.up_proj = nn.Linear(d, hidden, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(hidden, d, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-RMSNorm block: x + attn(norm(x)), then h + mlp(norm(h))."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = DecoderAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = DecoderMLP(cfg)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: PackedLayout
    ) -> torch.Tensor:
        h = x + self.self_attn(cast(torch.Tensor, self.input_layernorm(x)), cos, sin, layout)
        return h + self.mlp(cast(torch.Tensor, self.post_attention_layernorm(h)))


class CausalDecoder(nn.Module):
    """Token ids of packed sequences → final-norm hidden states (N, D), as transformers'
    `Qwen3Model(...).last_hidden_state` gives them for each sequence on its own."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(
            cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling
        )

    def forward(self, input_ids: torch.Tensor, seq_lens: list[int]) -> torch.Tensor:
        device = input_ids.device
        layout = PackedLayout.build(seq_lens, device)
        x = self.embed_tokens(input_ids)  # (N, D)
        cos, sin = self.rotary_emb(positions_of(seq_lens).to(device), x.dtype)  # (N, 1, Dh)
        for layer in self.layers:
            x = layer(x, cos, sin, layout)
        return cast(torch.Tensor, self.norm(x))


def decoder_map_name(name: str) -> str | None:
    """Checkpoint name → ours: drop the `model.` prefix; the LM head and rope buffers are
    not loaded (an embedding model reads hidden states)."""
    name = name.removeprefix("model.")
    if name.startswith("lm_head.") or "rotary_emb" in name:
        return None
    return name
