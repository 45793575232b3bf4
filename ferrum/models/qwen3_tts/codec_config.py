"""Configuration of the Qwen3-TTS 12 Hz speech codec, read from `speech_tokenizer/config.json`.

The file nests a Mimi-style `encoder_config` (waveform -> codes, for a voice-cloning reference
clip) and the codec's own `decoder_config` (codes -> waveform); the top level holds the sample
rates, the hop of each direction and how many of the encoder's quantizers are used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ferrum.errors import CheckpointError, UnsupportedModelError

MODEL_TYPE = "qwen3_tts_tokenizer_12hz"


def _pick(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """The entries of `raw` that are fields of the dataclass `cls`, lists made tuples."""
    names = {f.name for f in fields(cls)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in names}


@dataclass(frozen=True)
class CodecDecoderConfig:
    """The decoder: split RVQ dequantizer, a sliding-window transformer, a conv upsampler."""

    codebook_size: int = 2048  # entries per codebook
    codebook_dim: int = 512  # width of the dequantized frame (each VQ works at half of it)
    hidden_size: int = 512  # the pre-transformer's width
    latent_dim: int = 1024  # width between the pre-conv, the transformer and the upsampler
    head_dim: int = 64
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    intermediate_size: int = 1024
    attention_bias: bool = False
    sliding_window: int = 72  # frames each query sees, itself included
    num_hidden_layers: int = 8
    num_quantizers: int = 16
    num_semantic_quantizers: int = 1  # quantizers decoded by the first RVQ
    upsample_rates: tuple[int, ...] = (8, 5, 4, 3)  # the waveform decoder blocks' strides
    upsampling_ratios: tuple[int, ...] = (2, 2)  # the ConvNeXt upsampler's strides
    decoder_dim: int = 1536  # channels entering the waveform decoder (halved by each block)
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    @property
    def total_upsample(self) -> int:
        """Waveform samples per code frame."""
        total = 1
        for rate in (*self.upsample_rates, *self.upsampling_ratios):
            total *= rate
        return total


@dataclass(frozen=True)
class CodecEncoderConfig:
    """The encoder: Mimi's SEANet conv encoder, its transformer, a 2x downsample, a split RVQ."""

    audio_channels: int = 1
    hidden_size: int = 512
    num_filters: int = 64
    num_residual_layers: int = 1
    upsampling_ratios: tuple[int, ...] = (8, 6, 5, 4)  # applied reversed, as downsampling strides
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    use_causal_conv: bool = True
    pad_mode: str = "constant"
    compress: int = 2
    codebook_size: int = 2048
    codebook_dim: int = 256
    num_quantizers: int = 32
    num_semantic_quantizers: int = 1
    vector_quantization_hidden_dimension: int = 256
    num_hidden_layers: int = 8
    intermediate_size: int = 2048
    num_attention_heads: int = 8
    num_key_value_heads: int = 8
    head_dim: int = 64
    hidden_act: str = "gelu"
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    use_conv_shortcut: bool = False
    sampling_rate: int = 24000
    frame_rate: float = 12.5

    @property
    def downsample_ratio(self) -> int:
        """How many transformer frames make one code frame (Mimi: 25 Hz -> 12.5 Hz)."""
        hop = 1
        for ratio in self.upsampling_ratios:
            hop *= ratio
        return int(self.sampling_rate / hop / self.frame_rate)


@dataclass(frozen=True)
class CodecConfig:
    """The whole `speech_tokenizer/config.json`."""

    encoder: CodecEncoderConfig
    decoder: CodecDecoderConfig
    encoder_valid_num_quantizers: int = 16  # encoder codebooks the talker uses (of 32)
    input_sample_rate: int = 24000  # Hz the encoder reads
    output_sample_rate: int = 24000  # Hz the decoder writes
    decode_upsample_rate: int = 1920  # samples per frame out of the decoder
    encode_downsample_rate: int = 1920  # samples per frame into the encoder

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CodecConfig:
        model_type = raw.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise UnsupportedModelError(
                f"speech tokenizer of type {model_type!r} is not supported; "
                f"ferrum runs the 12 Hz codec ({MODEL_TYPE!r})"
            )
        top = {k: v for k, v in _pick(cls, raw).items() if k not in ("encoder", "decoder")}
        config = cls(
            encoder=CodecEncoderConfig(**_pick(CodecEncoderConfig, raw.get("encoder_config", {}))),
            decoder=CodecDecoderConfig(**_pick(CodecDecoderConfig, raw.get("decoder_config", {}))),
            **top,
        )
        if config.decoder.total_upsample != config.decode_upsample_rate:
            raise CheckpointError(
                f"decode_upsample_rate {config.decode_upsample_rate} does not match the decoder's "
                f"strides (their product is {config.decoder.total_upsample})"
            )
        return config

    @classmethod
    def from_file(cls, path: Path) -> CodecConfig:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise CheckpointError(f"{path}: missing (the speech tokenizer's config)") from e
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable JSON config ({e})") from e
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: expected a JSON object")
        try:
            return cls.from_dict(raw)
        except TypeError as e:
            raise CheckpointError(f"{path}: malformed speech tokenizer config ({e})") from e
