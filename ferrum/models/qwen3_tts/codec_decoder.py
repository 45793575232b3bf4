"""The speech codec's decoder: codes (B, Q, T) at 12.5 Hz -> waveform (B, 1, T * 1920) at 24 kHz.

Dequantize, a causal conv to the latent width, the sliding-window pre-transformer, two ConvNeXt
upsampling stages, then the waveform decoder (a conv, strided decoder blocks, snake, a conv to one
channel), clamped to [-1, 1]. Long inputs are decoded in chunks with some frames of left context
that are decoded again and dropped, exactly as the reference does: its transformer's positions
restart with every chunk, so chunking is part of the function, not only a memory saving.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ferrum.models.qwen3_tts.codec_config import CodecDecoderConfig
from ferrum.models.qwen3_tts.codec_layers import (
    CausalConv1d,
    CausalConvTranspose1d,
    ConvNeXtBlock,
    DecoderBlock,
    SnakeBeta,
)
from ferrum.models.qwen3_tts.codec_quantizer import SplitDequantizer
from ferrum.models.qwen3_tts.codec_transformer import DecoderPreTransformer, TransformerShape

CHUNK_FRAMES = 300  # frames decoded per pass
CHUNK_CONTEXT_FRAMES = 25  # frames of left context re-decoded before each later chunk
PRE_CONV_KERNEL = 3
WAVE_CONV_KERNEL = 7
WAVE_MIN, WAVE_MAX = -1.0, 1.0


class CodecDecoder(nn.Module):
    def __init__(self, config: CodecDecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.total_upsample = config.total_upsample
        self.quantizer = SplitDequantizer(
            config.num_quantizers,
            config.num_semantic_quantizers,
            config.codebook_size,
            config.codebook_dim,
        )
        self.pre_conv = CausalConv1d(config.codebook_dim, config.latent_dim, PRE_CONV_KERNEL)
        shape = TransformerShape(
            hidden_size=config.hidden_size,
            num_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads,
            head_dim=config.head_dim,
            intermediate_size=config.intermediate_size,
            rope_theta=config.rope_theta,
            norm_eps=config.rms_norm_eps,
            gated_mlp=True,
            rms_norm=True,
            attention_bias=config.attention_bias,
            sliding_window=config.sliding_window,
        )
        self.pre_transformer = DecoderPreTransformer(
            shape, config.num_hidden_layers, config.latent_dim
        )
        latent = config.latent_dim
        self.upsample = nn.ModuleList(
            nn.ModuleList([CausalConvTranspose1d(latent, latent, r, r), ConvNeXtBlock(latent)])
            for r in config.upsampling_ratios
        )
        self.decoder = nn.ModuleList(self._waveform_layers(config))

    @staticmethod
    def _waveform_layers(config: CodecDecoderConfig) -> list[nn.Module]:
        layers: list[nn.Module] = [
            CausalConv1d(config.latent_dim, config.decoder_dim, WAVE_CONV_KERNEL)
        ]
        dim = config.decoder_dim
        for rate in config.upsample_rates:
            layers.append(DecoderBlock(dim, dim // 2, rate))
            dim //= 2
        layers += [SnakeBeta(dim), CausalConv1d(dim, 1, WAVE_CONV_KERNEL)]
        return layers

    def forward(self, codes: Tensor) -> Tensor:  # (B, Q, T) int64 -> (B, 1, T * upsample)
        hidden = self.pre_conv(self.quantizer(codes))  # (B, latent, T)
        hidden = self.pre_transformer(hidden.transpose(1, 2)).transpose(1, 2)
        for stage in self.upsample:
            for layer in stage:
                hidden = layer(hidden)
        for layer in self.decoder:
            hidden = layer(hidden)
        return hidden.clamp(WAVE_MIN, WAVE_MAX)

    def chunked(self, codes: Tensor) -> Tensor:  # (B, Q, T) -> (B, 1, T * upsample)
        """Decode in CHUNK_FRAMES pieces, each after up to CHUNK_CONTEXT_FRAMES of context."""
        pieces = []
        start, total = 0, codes.shape[-1]
        while start < total:
            end = min(start + CHUNK_FRAMES, total)
            context = min(CHUNK_CONTEXT_FRAMES, start)
            wave = self(codes[..., start - context : end])
            pieces.append(wave[..., context * self.total_upsample :])
            start = end
        return torch.cat(pieces, dim=-1)
