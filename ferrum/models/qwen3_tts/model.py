"""A Qwen3-TTS checkpoint folder, loaded: text (+ speaker, instruction or reference voice) to
codec codes.

The folder is the hub's layout: `config.json` and `model.safetensors` (the talker and, for Base
models, the speaker encoder, named `talker.*` and `speaker_encoder.*`), the text tokenizer files,
`generation_config.json`, and `speech_tokenizer/` (the codec, loaded by `SpeechCodec`, needed
here to encode a reference clip for in-context voice cloning, and by the audio pipeline).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import Tensor, nn

from ferrum.errors import InvalidInputError
from ferrum.loader.safetensors import iter_safetensors, safetensors_files
from ferrum.loader.weights import load_named_tensors, materialize
from ferrum.models.qwen3_tts.codec import SpeechCodec, resample_like_reference
from ferrum.models.qwen3_tts.config import Qwen3TTSConfig
from ferrum.models.qwen3_tts.generate import GenerationOptions, generate_codes
from ferrum.models.qwen3_tts.prompt import PromptBuilder, SpeechRequest, VoiceClonePrompt
from ferrum.models.qwen3_tts.speaker_encoder import SpeakerEncoder, speaker_mel
from ferrum.models.qwen3_tts.talker import Talker
from ferrum.models.qwen3_tts.text_tokenizer import load_text_tokenizer

CODEC_DIR = "speech_tokenizer"
SPEAKER_ENCODER_PREFIX = "speaker_encoder."


class Qwen3TTSModel(nn.Module):
    """The checkpoint's modules: `talker` and, for Base models, `speaker_encoder`."""

    def __init__(self, config: Qwen3TTSConfig) -> None:
        super().__init__()
        self.talker = Talker(config.talker)
        self.speaker_encoder = (
            SpeakerEncoder(config.speaker_encoder) if config.model_type == "base" else None
        )

    @classmethod
    def from_dir(
        cls, path: Path, config: Qwen3TTSConfig, device: torch.device, dtype: torch.dtype
    ) -> Qwen3TTSModel:
        with torch.device("meta"):
            model = cls(config)
        materialize(model, device, dtype)

        def map_name(name: str) -> str | None:
            # CustomVoice/VoiceDesign checkpoints may still carry an unused speaker encoder.
            if name.startswith(SPEAKER_ENCODER_PREFIX) and model.speaker_encoder is None:
                return None
            return name

        weights = iter_safetensors(safetensors_files(path))
        load_named_tensors(model, weights, map_name, source=str(path))
        return model.eval()


class Qwen3TTS:
    """Text to codec codes with one Qwen3-TTS model (Base, CustomVoice or VoiceDesign)."""

    def __init__(
        self,
        path: Path,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        path = Path(path)
        device = device or torch.device("cpu")
        config = Qwen3TTSConfig.from_dir(path)
        model = Qwen3TTSModel.from_dir(path, config, device, dtype)
        generation = path / "generation_config.json"
        defaults = json.loads(generation.read_text(encoding="utf-8")) if generation.exists() else {}
        self._assemble(path, config, model, load_text_tokenizer(path), device, dtype, defaults)

    @classmethod
    def from_modules(
        cls,
        config: Qwen3TTSConfig,
        model: Qwen3TTSModel,
        tokenizer: Tokenizer,
        codec: SpeechCodec | None = None,
    ) -> Qwen3TTS:
        """A model assembled in memory rather than read from a folder (e.g. random weights of a
        real architecture for benchmarks); `codec` is what `.codec` returns."""
        tts = cls.__new__(cls)
        weight = model.talker.codec_head.weight
        tts._assemble(Path(), config, model, tokenizer, weight.device, weight.dtype, {})
        tts._codec = codec
        return tts

    def _assemble(
        self,
        path: Path,
        config: Qwen3TTSConfig,
        model: Qwen3TTSModel,
        tokenizer: Tokenizer,
        device: torch.device,
        dtype: torch.dtype,
        generation_defaults: dict,
    ) -> None:
        self.path = path
        self.device, self.dtype = device, dtype
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.prompts = PromptBuilder(self.model.talker, self.config, self.tokenizer)
        self.generation_defaults: dict = generation_defaults
        self._codec: SpeechCodec | None = None

    @property
    def speakers(self) -> list[str]:
        return sorted(self.config.talker.speaker_ids)

    @property
    def languages(self) -> list[str]:
        return self.config.supported_languages

    def default_options(self, **overrides: object) -> GenerationOptions:
        """The checkpoint's generation_config.json defaults, with `overrides`."""
        return GenerationOptions.from_generation_config(self.generation_defaults, **overrides)

    @torch.inference_mode()
    def speaker_embedding(self, audio: Tensor, sample_rate: int) -> Tensor:
        """The x-vector (hidden,) of a mono clip (samples,) at any sample rate."""
        if self.model.speaker_encoder is None:
            raise InvalidInputError(
                f"this is a {self.config.model_type} model; voice cloning needs a Base model"
            )
        target = self.config.speaker_encoder.sample_rate
        samples = resample_like_reference(audio.float().cpu().numpy(), sample_rate, target)
        mel = speaker_mel(torch.from_numpy(samples).to(self.device), target)  # (frames, mels)
        return self.model.speaker_encoder(mel[None].to(self.dtype))[0]

    def voice_clone_prompt(
        self,
        audio: Tensor,
        sample_rate: int,
        ref_text: str | None = None,
        x_vector_only: bool = False,
    ) -> VoiceClonePrompt:
        """The voice of a reference clip: its x-vector, plus (unless `x_vector_only`) its codec
        codes and transcript for in-context cloning, which needs `ref_text`."""
        if not x_vector_only and not (ref_text or "").strip():
            raise InvalidInputError(
                "in-context voice cloning needs the reference clip's transcript (--ref-text); "
                "without one, clone from the speaker embedding alone (x-vector only)"
            )
        embedding = self.speaker_embedding(audio, sample_rate)
        if x_vector_only:
            return VoiceClonePrompt(embedding)
        codes = self.codec.encode(audio.float().cpu(), sample_rate)  # (frames, Q)
        return VoiceClonePrompt(embedding, codes.to(self.device), ref_text)

    @property
    def codec(self) -> SpeechCodec:
        """The speech codec of the folder (`speech_tokenizer/`), loaded on first use."""
        if self._codec is None:
            self._codec = SpeechCodec.from_dir(self.path / CODEC_DIR, self.device, self.dtype)
        return self._codec

    def generate(
        self, requests: list[SpeechRequest], options: GenerationOptions | None = None
    ) -> list[Tensor]:
        """Codec codes (frames, Q) int64 of each request, generated as one batch."""
        options = options or self.default_options()
        with torch.inference_mode():
            prompts = [self.prompts.build(r) for r in requests]
            tts_pad = self.prompts.special_text()[2]
            return generate_codes(self.model.talker, prompts, tts_pad, options)
