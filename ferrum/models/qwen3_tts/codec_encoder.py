"""The speech codec's encoder (Mimi's, without its decoder): waveform (B, 1, N) at 24 kHz ->
codes (B, Q, ceil(N / 1920)) at 12.5 Hz.

SEANet: a conv, then per stride a residual block (ELU, conv, ELU, 1x1 conv, plus the input) and an
ELU + strided conv that doubles the channels; an ELU + conv to the hidden width. Then a causal
transformer over the 25 Hz frames, a strided conv (replicate-padded) down to 12.5 Hz, and the
split RVQ. Only the first `num_quantizers` codebooks are computed: residual quantization is
sequential, so those codes do not depend on the later codebooks.
"""

from __future__ import annotations

from torch import Tensor, nn

from ferrum.models.qwen3_tts.codec_config import CodecEncoderConfig
from ferrum.models.qwen3_tts.codec_layers import CausalConv1d
from ferrum.models.qwen3_tts.codec_quantizer import SplitQuantizer
from ferrum.models.qwen3_tts.codec_transformer import CodecTransformer, TransformerShape

DOWNSAMPLE_STRIDE = 2  # Mimi's fixed stride for the 25 Hz -> 12.5 Hz conv


class ResnetBlock(nn.Module):
    def __init__(self, config: CodecEncoderConfig, dim: int, dilation: int) -> None:
        super().__init__()
        hidden = dim // config.compress
        pad = config.pad_mode
        self.block = nn.ModuleList(
            [
                nn.ELU(),
                CausalConv1d(
                    dim, hidden, config.residual_kernel_size, dilation=dilation, pad_mode=pad
                ),
                nn.ELU(),
                CausalConv1d(hidden, dim, 1, pad_mode=pad),
            ]
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T)
        h = x
        for layer in self.block:
            h = layer(h)
        return x + h


class SeanetEncoder(nn.Module):
    def __init__(self, config: CodecEncoderConfig) -> None:
        super().__init__()
        pad = config.pad_mode
        width = config.num_filters
        layers: list[nn.Module] = [
            CausalConv1d(config.audio_channels, width, config.kernel_size, pad_mode=pad)
        ]
        for ratio in reversed(config.upsampling_ratios):
            for j in range(config.num_residual_layers):
                layers.append(ResnetBlock(config, width, config.dilation_growth_rate**j))
            layers += [
                nn.ELU(),
                CausalConv1d(width, width * 2, ratio * 2, stride=ratio, pad_mode=pad),
            ]
            width *= 2
        layers += [
            nn.ELU(),
            CausalConv1d(width, config.hidden_size, config.last_kernel_size, pad_mode=pad),
        ]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, N) -> (B, hidden, N / hop)
        for layer in self.layers:
            x = layer(x)
        return x


class CodecEncoder(nn.Module):
    def __init__(self, config: CodecEncoderConfig, num_quantizers: int) -> None:
        super().__init__()
        self.config = config
        self.encoder = SeanetEncoder(config)
        shape = TransformerShape(
            hidden_size=config.hidden_size,
            num_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads,
            head_dim=config.head_dim,
            intermediate_size=config.intermediate_size,
            rope_theta=config.rope_theta,
            norm_eps=config.norm_eps,
            gated_mlp=False,
            rms_norm=False,
            # the reference builds a plain causal mask here: Mimi's sliding window is not applied
            sliding_window=None,
        )
        self.encoder_transformer = CodecTransformer(shape, config.num_hidden_layers)
        self.downsample = CausalConv1d(
            config.hidden_size,
            config.hidden_size,
            2 * config.downsample_ratio,
            stride=DOWNSAMPLE_STRIDE,
            bias=False,
            pad_mode="replicate",
        )
        num_semantic = config.num_semantic_quantizers
        self.quantizer = SplitQuantizer(
            num_semantic,
            num_quantizers - num_semantic,
            config.codebook_size,
            config.codebook_dim,
            config.hidden_size,
        )

    def forward(self, audio: Tensor) -> Tensor:  # (B, 1, N) -> (B, Q, ceil(N / hop / stride))
        hidden = self.encoder(audio)  # (B, hidden, T25)
        hidden = self.encoder_transformer(hidden.transpose(1, 2)).transpose(1, 2)
        return self.quantizer(self.downsample(hidden))
