"""Text to speech with a Qwen3-TTS model folder: text in, 24 kHz waveform out.

The talker turns the text (with a named speaker, an instruction or a reference voice, by the
model's kind) into codec codes; the speech codec turns the codes into audio. The whole text is
one request, as in the reference, so the result comes as a single chunk. For in-context voice
cloning the reference clip's codes lead the generated ones into the codec (as the reference
does, for a seamless voice) and the clip's share of the audio is cut off again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ferrum.audio.io import load_audio
from ferrum.audio.tts import SpeechChunk, SpeechResult
from ferrum.device import Backend
from ferrum.errors import InvalidInputError
from ferrum.models.qwen3_tts.config import SPEAKER_SAMPLE_RATE
from ferrum.models.qwen3_tts.model import Qwen3TTS
from ferrum.models.qwen3_tts.prompt import SpeechRequest, VoiceClonePrompt, check_request
from ferrum.models.qwen3_tts.sampling import SamplingOptions


def is_qwen3_tts_dir(spec: str | Path | None) -> bool:
    """Whether `spec` names a Qwen3-TTS checkpoint folder (config.json of model_type qwen3_tts)."""
    if spec is None:
        return False
    config = Path(spec).expanduser() / "config.json"
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "qwen3_tts"
    except (OSError, ValueError, AttributeError):
        return False


@dataclass(frozen=True)
class Qwen3SpeechOptions:
    """How to speak with a Qwen3-TTS model."""

    speaker: str | None = None  # CustomVoice models: one of `speakers`
    language: str = "auto"  # a language of the model, or "auto"
    instruct: str | None = None  # VoiceDesign (and CustomVoice 1.7B): the voice and style
    ref_audio: Path | None = None  # Base models: a clip of the voice to clone
    ref_text: str | None = None  # its transcript (in-context cloning); None: x-vector only
    seed: int | None = None  # fixes the sampling, so the same text gives the same audio
    greedy: bool = False  # argmax instead of sampling (deterministic, but less natural)
    max_new_tokens: int | None = None  # None: the checkpoint's generation_config.json


class Qwen3Synthesizer:
    """Speaks text with a Qwen3-TTS model folder (Base, CustomVoice or VoiceDesign)."""

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        self.path = Path(path).expanduser()
        self.backend = Backend.resolve(device, "float32")
        self.tts = Qwen3TTS(self.path, self.backend.device, self.backend.dtype)
        self.codec = self.tts.codec

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def speakers(self) -> list[str]:
        return self.tts.speakers

    def synthesize(self, text: str, options: Qwen3SpeechOptions | None = None) -> SpeechResult:
        """The whole utterance of `text`."""
        chunks = [c.samples for c in self.stream(text, options)]
        return SpeechResult(np.concatenate(chunks), self.sample_rate)

    def stream(self, text: str, options: Qwen3SpeechOptions | None = None) -> Iterator[SpeechChunk]:
        """The speech of `text` as chunks; bad input raises before any audio is computed."""
        options = options or Qwen3SpeechOptions()
        request = self._request(text, options)
        return self._stream(request, options)

    def _request(self, text: str, options: Qwen3SpeechOptions) -> SpeechRequest:
        voice = None
        if options.ref_audio is not None:
            audio = torch.from_numpy(load_audio(options.ref_audio, SPEAKER_SAMPLE_RATE))
            x_vector_only = not (options.ref_text or "").strip()
            voice = self.tts.voice_clone_prompt(
                audio, SPEAKER_SAMPLE_RATE, options.ref_text, x_vector_only=x_vector_only
            )
        elif options.ref_text:
            raise InvalidInputError("--ref-text is the transcript of --ref-audio; give the clip")
        request = SpeechRequest(
            text=text,
            language=options.language,
            speaker=options.speaker,
            instruct=options.instruct,
            voice=voice,
        )
        check_request(self.tts.config, request)
        return request

    def _stream(self, request: SpeechRequest, options: Qwen3SpeechOptions) -> Iterator[SpeechChunk]:
        overrides: dict[str, object] = {"seed": options.seed}
        if options.max_new_tokens is not None:
            overrides["max_new_tokens"] = options.max_new_tokens
        generation = self.tts.default_options(**overrides)
        if options.greedy:
            argmax = SamplingOptions(do_sample=False)
            generation = replace(generation, talker=argmax, code_predictor=argmax)
        codes = self.tts.generate([request], generation)[0]
        yield SpeechChunk(self._decode(codes, request.voice), self.sample_rate, 0, request.text)

    def _decode(self, codes: torch.Tensor, voice: VoiceClonePrompt | None) -> np.ndarray:
        """Codes (frames, Q) -> float32 samples in [-1, 1]."""
        prefix = voice.ref_codes if voice is not None else None
        if codes.shape[0] == 0:
            return np.zeros(0, np.float32)
        whole = codes if prefix is None else torch.cat((prefix.to(codes.device), codes), dim=0)
        audio = self.codec.decode(whole[None])[0].float().cpu().numpy()
        if prefix is not None:
            audio = audio[int(prefix.shape[0] / whole.shape[0] * audio.shape[0]) :]
        return np.clip(audio, -1.0, 1.0).astype(np.float32)
