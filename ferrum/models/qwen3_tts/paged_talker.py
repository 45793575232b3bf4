"""The talker's decoder stack over ferrum's paged KV cache, for continuous batching.

`Decoder` (decoder.py) keeps a dense, left-padded cache per batch; this module runs the very same
weights over the flat batch the LLM engine uses instead: the T new rows of S sequences are one
(T, hidden) tensor, and each layer's keys and values go to the sequences' cache blocks through
`ferrum.layers.attention.Attention` (the torch reference backend, or Triton on CUDA). The inputs
are embeddings, not token ids: the talker reads sums of codec and text embeddings.

It wraps a decoder rather than owning weights, so a loaded `Talker` serves both paths.
"""

from __future__ import annotations

from torch import Tensor, nn

from ferrum.layers.attention import Attention, AttentionMetadata
from ferrum.models.qwen3_tts.decoder import Decoder, DecoderLayer, _rotate, rotary_tables


class PagedDecoder(nn.Module):
    """`decoder`'s layers over a paged KV cache; one `Attention` (owning its cache slice) per
    layer. The model runner sets each `attention[i].kv_cache` and, on CUDA, the backend."""

    def __init__(self, decoder: Decoder) -> None:
        super().__init__()
        self.decoder = decoder
        c = decoder.config
        self.attention = nn.ModuleList(
            Attention(c.num_heads, c.num_kv_heads, c.head_dim, c.head_dim**-0.5)
            for _ in decoder.layers
        )

    def forward(self, embeds: Tensor, positions: Tensor, meta: AttentionMetadata) -> Tensor:
        """embeds (T, hidden) at positions (T,) -> normed hidden states (T, hidden)."""
        c = self.decoder.config
        cos, sin = rotary_tables(positions[None], c.head_dim, c.rope_theta)  # (1, T, D)
        rotary = (cos[0, :, None].to(embeds.dtype), sin[0, :, None].to(embeds.dtype))  # (T, 1, D)
        x = embeds
        for layer, attention in zip(self.decoder.layers, self.attention, strict=True):
            x = self._layer(layer, attention, x, rotary, meta)
        return self.decoder.norm(x)

    @staticmethod
    def _layer(
        layer: DecoderLayer,
        attention: Attention,
        x: Tensor,
        rotary: tuple[Tensor, Tensor],
        meta: AttentionMetadata,
    ) -> Tensor:
        t = x.shape[0]
        a = layer.self_attn
        h = layer.input_layernorm(x)
        q = a.q_norm(a.q_proj(h).view(t, -1, a.head_dim))  # (T, H, D)
        k = a.k_norm(a.k_proj(h).view(t, -1, a.head_dim))  # (T, H_kv, D)
        v = a.v_proj(h).view(t, -1, a.head_dim)
        q, k = _rotate(q, *rotary), _rotate(k, *rotary)
        attended = attention(q, k, v, meta)  # (T, H, D)
        x = x + a.o_proj(attended.reshape(t, -1))
        return x + layer.mlp(layer.post_attention_layernorm(x))
