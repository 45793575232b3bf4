"""SpeechCodec: the Qwen3-TTS 12 Hz speech tokenizer, codes <-> 24 kHz waveform.

Reads the `speech_tokenizer/` folder of a Qwen3-TTS checkpoint as the hub ships it (config.json
and model.safetensors of `Qwen3TTSTokenizerV2Model`, weights named `encoder.*` and `decoder.*`).
A code frame holds `num_quantizers` codes (one semantic, the rest acoustic) for 1920 samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ferrum.errors import CheckpointError, InvalidInputError
from ferrum.loader.safetensors import iter_safetensors, safetensors_files
from ferrum.loader.weights import load_named_tensors, materialize
from ferrum.models.qwen3_tts.codec_config import CodecConfig
from ferrum.models.qwen3_tts.codec_decoder import CodecDecoder
from ferrum.models.qwen3_tts.codec_encoder import CodecEncoder

CONFIG_NAME = "config.json"
SUBFOLDER = "speech_tokenizer"  # where a full Qwen3-TTS checkpoint keeps the codec
# Mimi's own decoder, which the reference deletes from its encoder; skipped should a file keep it
MIMI_DECODER_PREFIXES = ("encoder.upsample.", "encoder.decoder_transformer.", "encoder.decoder.")
PADDING_CODE = -1  # marks frames past the end of a shorter sequence in a batch
RESAMPLE_QUALITY = "soxr_hq"  # soxr's high quality: what the reference (librosa's default) uses


class CodecModel(nn.Module):
    """Both halves, under the checkpoint's own top-level names."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.encoder = CodecEncoder(config.encoder, config.encoder_valid_num_quantizers)
        self.decoder = CodecDecoder(config.decoder)


def checkpoint_name_map(config: CodecConfig) -> Callable[[str], str | None]:
    """Checkpoint name -> our parameter name; None for tensors the codec does not use: the
    encoder's codebooks past the valid ones, and each RVQ's projection for the other direction
    (the decoder never quantizes, the encoder never dequantizes)."""
    valid_acoustic = config.encoder_valid_num_quantizers - config.encoder.num_semantic_quantizers
    acoustic = "encoder.quantizer.acoustic_residual_vector_quantizer.layers."

    def map_name(name: str) -> str | None:
        if name.endswith(".initialized") or name.startswith(MIMI_DECODER_PREFIXES):
            return None
        if name.startswith("decoder.quantizer.") and ".input_proj." in name:
            return None
        if name.startswith("encoder.quantizer.") and ".output_proj." in name:
            return None
        if name.startswith(acoustic) and int(name[len(acoustic) :].split(".")[0]) >= valid_acoustic:
            return None
        if name.startswith("encoder.quantizer.") and name.endswith(".codebook.embed_sum"):
            return name[: -len("embed_sum")] + "embedding_sum"
        return name

    return map_name


class SpeechCodec:
    """Codes (B, T, Q) -> waveform, and a reference clip -> codes (T, Q)."""

    def __init__(self, model: CodecModel, config: CodecConfig) -> None:
        self.model = model.eval()
        self.config = config
        self.sample_rate: int = config.output_sample_rate
        self.frame_rate: float = config.output_sample_rate / config.decode_upsample_rate
        self.num_quantizers: int = config.decoder.num_quantizers

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @classmethod
    def from_dir(cls, path: Path, device: torch.device, dtype: torch.dtype) -> SpeechCodec:
        """Load from a `speech_tokenizer/` folder, or from a Qwen3-TTS checkpoint holding one."""
        path = Path(path)
        if (path / SUBFOLDER).is_dir():
            path = path / SUBFOLDER
        if not path.is_dir():
            raise CheckpointError(f"{path}: no such speech tokenizer folder")
        config = CodecConfig.from_file(path / CONFIG_NAME)
        with torch.device("meta"):
            model = CodecModel(config)
        materialize(model, device, dtype)
        weights = iter_safetensors(safetensors_files(path))
        load_named_tensors(
            model, weights, checkpoint_name_map(config), source=f"{path} (speech tokenizer)"
        )
        return cls(model, config)

    @torch.inference_mode()
    def decode(self, codes: Tensor) -> Tensor:
        """(B, T, Q) int64 codes -> (B, T * 1920) float waveform at `sample_rate`.

        A batch of different lengths pads the shorter sequences with -1 after their last frame
        (as the reference does); their audio is exact up to their own length and zero after it.
        """
        codes = self._check_codes(codes)
        frames = (codes[..., 0] > PADDING_CODE).sum(dim=1)  # (B,)
        upsample = self.config.decode_upsample_rate
        audio = self.model.decoder.chunked(codes.clamp(min=0).transpose(1, 2))[:, 0]  # (B, N)
        keep = torch.arange(audio.shape[-1], device=audio.device)[None] < frames[:, None] * upsample
        return (audio * keep).float()

    def decode_lengths(self, codes: Tensor) -> Tensor:
        """Samples of real audio in each row of `decode(codes)`: (B,) int64."""
        return (codes[..., 0] > PADDING_CODE).sum(dim=1) * self.config.decode_upsample_rate

    def _check_codes(self, codes: Tensor) -> Tensor:
        if codes.dim() == 2:
            codes = codes[None]
        if codes.dim() != 3 or codes.shape[-1] != self.num_quantizers:
            raise InvalidInputError(
                f"speech codes must have shape (batch, frames, {self.num_quantizers}), "
                f"got {tuple(codes.shape)}"
            )
        if codes.is_floating_point():
            raise InvalidInputError("speech codes must be integers")
        if codes.shape[1] == 0:
            raise InvalidInputError("speech codes hold no frames")
        size = self.config.decoder.codebook_size
        if codes.numel() and (codes.max() >= size or codes.min() < PADDING_CODE):
            raise InvalidInputError(f"speech codes must lie in [0, {size}) (or -1 for padding)")
        return codes.to(self.device, torch.long)

    @torch.inference_mode()
    def encode(self, audio: Tensor, sample_rate: int) -> Tensor:
        """A mono clip (samples,) at `sample_rate` -> codes (T, Q) int64, T = ceil(N / 1920)
        of the clip resampled to the codec's input rate."""
        audio = torch.as_tensor(audio)
        if audio.dim() != 1 or audio.numel() == 0:
            raise InvalidInputError(
                f"a reference clip must be non-empty mono samples (n,), got {tuple(audio.shape)}"
            )
        if sample_rate <= 0:
            raise InvalidInputError(f"sample rate must be positive, got {sample_rate}")
        samples = resample_like_reference(
            audio.float().cpu().numpy(), sample_rate, self.config.input_sample_rate
        )
        x = torch.from_numpy(samples).to(self.device, self.dtype)[None, None]  # (1, 1, N)
        codes = self.model.encoder(x)[0]  # (Q, T)
        frames = math.ceil(samples.shape[0] / self.config.encode_downsample_rate)
        return codes[:, :frames].transpose(0, 1).long()


def resample_like_reference(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """soxr HQ resampling, cut or zero-padded to ceil(n * new / orig) samples: what
    `librosa.resample` (the reference's resampler) returns, so codes match it exactly."""
    if orig_rate == new_rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    import soxr

    out = soxr.resample(samples, orig_rate, new_rate, quality=RESAMPLE_QUALITY)
    target = math.ceil(samples.shape[0] * new_rate / orig_rate)
    fitted = np.zeros(target, dtype=np.float32)
    fitted[: min(target, out.shape[0])] = out[:target]
    return fitted
