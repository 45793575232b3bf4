"""Whisper as plain tensors: the audio encoder, the text decoder with a preallocated KV cache,
and how Hugging Face and CTranslate2 checkpoint names map onto its parameters.

Nothing here knows about audio files, tokens' meaning or decoding strategies
(`ferrum.audio.decoding` does those). Self-attention q/k/v are one fused matrix (as CTranslate2
stores them); Whisper's k projection has no bias, so its slice of the fused bias stays zero.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

N_AUDIO_CTX = 1500  # encoder positions: 30 s of 10 ms mel frames, halved by conv2's stride
N_TEXT_CTX = 448  # decoder positions
MAX_TIMESCALE = 10000  # of the encoder's sinusoidal position table


@dataclass(frozen=True)
class WhisperDims:
    """The shape of a Whisper checkpoint."""

    n_mels: int  # mel bins of the input (80, or 128 for large-v3 and turbo)
    n_audio_ctx: int  # encoder positions (1500)
    n_audio_state: int  # encoder width
    n_audio_head: int  # encoder attention heads
    n_audio_layer: int  # encoder blocks
    n_vocab: int  # tokens, including specials (timestamps are not in the vocabulary count)
    n_text_ctx: int  # decoder positions (448)
    n_text_state: int  # decoder width
    n_text_head: int  # decoder attention heads
    n_text_layer: int  # decoder blocks

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> WhisperDims:
        """From a transformers `WhisperConfig` dict (config.json)."""
        return cls(
            n_mels=config["num_mel_bins"],
            n_audio_ctx=config.get("max_source_positions", N_AUDIO_CTX),
            n_audio_state=config["d_model"],
            n_audio_head=config["encoder_attention_heads"],
            n_audio_layer=config["encoder_layers"],
            n_vocab=config["vocab_size"],
            n_text_ctx=config.get("max_target_positions", N_TEXT_CTX),
            n_text_state=config["d_model"],
            n_text_head=config["decoder_attention_heads"],
            n_text_layer=config["decoder_layers"],
        )


def sinusoids(length: int, channels: int, max_timescale: float = MAX_TIMESCALE) -> Tensor:
    """The encoder's fixed position table: sin in the first half of channels, cos in the second."""
    log_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_increment * torch.arange(channels // 2, dtype=torch.float32))
    scaled_time = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)  # (length, channels)


def _fused_loader(shards: tuple[str, ...]) -> Callable[[nn.Parameter, Tensor, Any], None]:
    """Copy a checkpoint tensor into its slice of a fused parameter, or all of it (shard None)."""

    def load(param: nn.Parameter, tensor: Tensor, shard: Any) -> None:
        with torch.no_grad():
            if shard is None:
                param.copy_(tensor.reshape(param.shape).to(param.dtype))
                return
            size = param.shape[0] // len(shards)
            start = shards.index(shard) * size
            param[start : start + size].copy_(tensor.to(param.dtype))

    return load


class KVCache:
    """Per-layer keys and values of one decoding batch, preallocated to the decoder's context.

    Every row of the batch sits at the same position (`length`): prompts are the same length and
    finished rows keep feeding end-of-text, so one offset serves all. Cross-attention keys and
    values are computed once from the encoder output.
    """

    def __init__(self, self_kv: list[tuple[Tensor, Tensor]], cross_kv: list[tuple[Tensor, Tensor]]):
        self.self_kv = self_kv  # per layer: (B, H, n_text_ctx, Dh) each
        self.cross_kv = cross_kv  # per layer: (B, H, n_audio_ctx, Dh) each
        self.length = 0  # positions filled

    def reorder(self, index: Tensor) -> None:
        """Keep rows `index` (beam search picks which hypotheses survive)."""
        self.self_kv = [
            (k.index_select(0, index), v.index_select(0, index)) for k, v in self.self_kv
        ]
        self.cross_kv = [
            (k.index_select(0, index), v.index_select(0, index)) for k, v in self.cross_kv
        ]

    def repeat(self, times: int) -> None:
        """Repeat each row `times` times in place (one audio → several beams or samples)."""
        self.self_kv = [
            (k.repeat_interleave(times, 0), v.repeat_interleave(times, 0)) for k, v in self.self_kv
        ]
        self.cross_kv = [
            (k.repeat_interleave(times, 0), v.repeat_interleave(times, 0)) for k, v in self.cross_kv
        ]


def _split_heads(x: Tensor, n_head: int) -> Tensor:
    b, t, d = x.shape
    return x.view(b, t, n_head, d // n_head).transpose(1, 2)  # (B, H, T, Dh)


def _merge_heads(x: Tensor) -> Tensor:
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)  # (B, T, D)


class SelfAttention(nn.Module):
    """Multi-head self-attention with fused q/k/v (the k slice of the bias is always zero)."""

    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_state, 3 * n_state)
        self.out = nn.Linear(n_state, n_state)
        self.init_buffers()

    def init_buffers(self) -> None:
        # Whisper's k projection has no bias; checkpoints fill the q and v slices only.
        with torch.no_grad():
            self.qkv.bias.zero_()
        self.qkv.weight.weight_loader = _fused_loader(("q", "k", "v"))  # type: ignore[attr-defined]
        self.qkv.bias.weight_loader = _fused_loader(("q", "k", "v"))  # type: ignore[attr-defined]

    def forward(
        self, x: Tensor, cache: tuple[Tensor, Tensor] | None = None, offset: int = 0
    ) -> Tensor:
        q, k, v = self._qkv(x)  # (B, H, T, Dh) each
        if cache is None:  # encoder: full bidirectional attention
            return self.out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))
        k_cache, v_cache = cache
        t = x.shape[1]
        k_cache[:, :, offset : offset + t] = k
        v_cache[:, :, offset : offset + t] = v
        keys, values = k_cache[:, :, : offset + t], v_cache[:, :, : offset + t]
        mask = None
        if t > 1:  # causal within the new tokens, everything before them visible
            mask = torch.ones(t, offset + t, dtype=torch.bool, device=x.device).tril(offset)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.out(_merge_heads(y))

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, T, D) each
        return (
            _split_heads(q, self.n_head),
            _split_heads(k, self.n_head),
            _split_heads(v, self.n_head),
        )


class CrossAttention(nn.Module):
    """Decoder → encoder attention; keys and values (fused projection) are computed once."""

    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.q = nn.Linear(n_state, n_state)
        self.kv = nn.Linear(n_state, 2 * n_state)
        self.out = nn.Linear(n_state, n_state)
        self.init_buffers()

    def init_buffers(self) -> None:
        with torch.no_grad():
            self.kv.bias.zero_()
        self.kv.weight.weight_loader = _fused_loader(("k", "v"))  # type: ignore[attr-defined]
        self.kv.bias.weight_loader = _fused_loader(("k", "v"))  # type: ignore[attr-defined]

    def project_kv(self, xa: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.kv(xa).chunk(2, dim=-1)  # (B, S, D) each
        return _split_heads(k, self.n_head), _split_heads(v, self.n_head)

    def forward(
        self, x: Tensor, kv: tuple[Tensor, Tensor], return_qk: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        q = _split_heads(self.q(x), self.n_head)  # (B, H, T, Dh)
        k, v = kv
        if not return_qk:
            return self.out(_merge_heads(F.scaled_dot_product_attention(q, k, v))), None
        qk = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, T, S)
        y = qk.float().softmax(-1).to(q.dtype) @ v
        return self.out(_merge_heads(y)), qk


class MLP(nn.Module):
    def __init__(self, n_state: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_state, 4 * n_state)
        self.fc2 = nn.Linear(4 * n_state, n_state)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn_ln = nn.LayerNorm(n_state)
        self.attn = SelfAttention(n_state, n_head)
        self.mlp_ln = nn.LayerNorm(n_state)
        self.mlp = MLP(n_state)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class DecoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn_ln = nn.LayerNorm(n_state)
        self.attn = SelfAttention(n_state, n_head)
        self.cross_attn_ln = nn.LayerNorm(n_state)
        self.cross_attn = CrossAttention(n_state, n_head)
        self.mlp_ln = nn.LayerNorm(n_state)
        self.mlp = MLP(n_state)

    def forward(
        self,
        x: Tensor,
        self_kv: tuple[Tensor, Tensor],
        cross_kv: tuple[Tensor, Tensor],
        offset: int,
        return_qk: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        x = x + self.attn(self.attn_ln(x), self_kv, offset)
        y, qk = self.cross_attn(self.cross_attn_ln(x), cross_kv, return_qk)
        x = x + y
        return x + self.mlp(self.mlp_ln(x)), qk


class AudioEncoder(nn.Module):
    """Log-mel (B, n_mels, 3000) → audio features (B, 1500, D)."""

    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        d = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.empty(dims.n_audio_ctx, d))
        self.blocks = nn.ModuleList(
            EncoderBlock(d, dims.n_audio_head) for _ in range(dims.n_audio_layer)
        )
        self.ln_post = nn.LayerNorm(d)
        self.init_buffers()

    def init_buffers(self) -> None:
        # Checkpoints store this table too (and overwrite it); it is always these sinusoids.
        table = sinusoids(*self.positional_embedding.shape)
        self.positional_embedding = table.to(
            self.positional_embedding.device, self.positional_embedding.dtype
        )

    def forward(self, mel: Tensor) -> Tensor:
        x = F.gelu(self.conv1(mel))  # (B, D, 3000)
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, 1500, D)
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


class TextDecoder(nn.Module):
    """Tokens (B, T) at position `offset`, with the cache → logits (B, T, V)."""

    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        d = dims.n_text_state
        self.n_head = dims.n_text_head
        self.n_ctx = dims.n_text_ctx
        self.token_embedding = nn.Embedding(dims.n_vocab, d)
        self.positional_embedding = nn.Parameter(torch.empty(dims.n_text_ctx, d))
        self.blocks = nn.ModuleList(
            DecoderBlock(d, dims.n_text_head) for _ in range(dims.n_text_layer)
        )
        self.ln = nn.LayerNorm(d)

    def new_cache(self, audio_features: Tensor) -> KVCache:
        """Preallocate self-attention slots and project the encoder output once per layer."""
        b = audio_features.shape[0]
        d = self.token_embedding.embedding_dim
        shape = (b, self.n_head, self.n_ctx, d // self.n_head)
        like = audio_features
        self_kv = [(like.new_empty(shape), like.new_empty(shape)) for _ in self.blocks]
        cross_kv = [block.cross_attn.project_kv(audio_features) for block in self.blocks]
        return KVCache(self_kv, cross_kv)

    def forward(
        self,
        tokens: Tensor,
        cache: KVCache,
        return_qk: bool = False,
        logits_at: list[int] | None = None,  # positions whose logits are wanted (default: all)
    ) -> tuple[Tensor, list[Tensor]]:
        offset = cache.length
        t = tokens.shape[1]
        x = (
            self.token_embedding(tokens) + self.positional_embedding[offset : offset + t]
        )  # (B, T, D)
        qks: list[Tensor] = []
        for block, self_kv, cross_kv in zip(
            self.blocks, cache.self_kv, cache.cross_kv, strict=True
        ):
            x, qk = block(x, self_kv, cross_kv, offset, return_qk)
            if qk is not None:
                qks.append(qk)
        cache.length = offset + t
        if logits_at is not None:
            # a prompt of a few hundred tokens needs one or two rows of (T, V) logits, not all
            x = x[:, logits_at]
        x = self.ln(x)
        logits = x @ self.token_embedding.weight.T  # (B, T, V): the output projection is tied
        return logits.float(), qks


class Whisper(nn.Module):
    """The encoder-decoder; `dims` says its shape."""

    def __init__(self, dims: WhisperDims) -> None:
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(dims)
        self.decoder = TextDecoder(dims)

    @property
    def is_multilingual(self) -> bool:
        # English-only checkpoints have 51864 tokens; multilingual ones 51865 (+1 for large-v3).
        return self.dims.n_vocab >= 51865


# --- checkpoint names → parameters ----------------------------------------------------------

_HF_BLOCK = {
    "self_attn_layer_norm": "attn_ln",
    "self_attn.out_proj": "attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "encoder_attn.q_proj": "cross_attn.q",
    "encoder_attn.out_proj": "cross_attn.out",
    "final_layer_norm": "mlp_ln",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
}
_HF_FUSED = {
    "self_attn.q_proj": ("attn.qkv", "q"),
    "self_attn.k_proj": ("attn.qkv", "k"),
    "self_attn.v_proj": ("attn.qkv", "v"),
    "encoder_attn.k_proj": ("cross_attn.kv", "k"),
    "encoder_attn.v_proj": ("cross_attn.kv", "v"),
}
_HF_TOP = {
    "model.encoder.conv1": "encoder.conv1",
    "model.encoder.conv2": "encoder.conv2",
    "model.encoder.embed_positions": "encoder.positional_embedding",
    "model.encoder.layer_norm": "encoder.ln_post",
    "model.decoder.embed_tokens": "decoder.token_embedding",
    "model.decoder.embed_positions": "decoder.positional_embedding",
    "model.decoder.layer_norm": "decoder.ln",
}
_HF_LAYER = re.compile(r"model\.(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def hf_name_map(name: str) -> str | tuple[str, str] | None:
    """transformers' WhisperForConditionalGeneration names → ours (proj_out is tied: skipped)."""
    if name.startswith("proj_out."):
        return None
    match = _HF_LAYER.match(name)
    if match:
        stack, index, module, kind = match.groups()
        prefix = f"{stack}.blocks.{index}"
        if module in _HF_FUSED:
            target, shard = _HF_FUSED[module]
            return f"{prefix}.{target}.{kind}", shard
        return f"{prefix}.{_HF_BLOCK.get(module, module)}.{kind}"
    module, _, kind = name.rpartition(".")
    if module in ("model.encoder.embed_positions", "model.decoder.embed_positions"):
        return _HF_TOP[module]  # a table, not a module with .weight
    return f"{_HF_TOP.get(module, module)}.{kind}"


_CT2_BLOCK = {
    "self_attention/layer_norm": "attn_ln",
    "self_attention/linear_0": "attn.qkv",
    "self_attention/linear_1": "attn.out",
    "attention/layer_norm": "cross_attn_ln",
    "attention/linear_0": "cross_attn.q",
    "attention/linear_1": "cross_attn.kv",
    "attention/linear_2": "cross_attn.out",
    "ffn/layer_norm": "mlp_ln",
    "ffn/linear_0": "mlp.fc1",
    "ffn/linear_1": "mlp.fc2",
}
_CT2_TOP = {
    "encoder/conv1": "encoder.conv1",
    "encoder/conv2": "encoder.conv2",
    "encoder/layer_norm": "encoder.ln_post",
    "decoder/embeddings": "decoder.token_embedding",
    "decoder/layer_norm": "decoder.ln",
}
_CT2_KIND = {"gamma": "weight", "beta": "bias", "weight": "weight", "bias": "bias"}
_CT2_LAYER = re.compile(r"(encoder|decoder)/layer_(\d+)/(.+)/(\w+)$")


def ct2_name_map(name: str) -> str | None:
    """CTranslate2 WhisperSpec names → ours (the tied projection alias is skipped)."""
    if name == "decoder/projection/weight":
        return None
    if name == "encoder/position_encodings/encodings":
        return "encoder.positional_embedding"
    if name == "decoder/position_encodings/encodings":
        return "decoder.positional_embedding"
    match = _CT2_LAYER.match(name)
    if match:
        stack, index, module, kind = match.groups()
        return f"{stack}.blocks.{index}.{_CT2_BLOCK.get(module, module)}.{_CT2_KIND[kind]}"
    module, _, kind = name.rpartition("/")
    return f"{_CT2_TOP.get(module, module)}.{_CT2_KIND.get(kind, kind)}"
