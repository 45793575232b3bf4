"""Text to speech with a Qwen3-TTS model folder: text in, 24 kHz waveform out, sentence by sentence.

The pipeline per text has three stages, public so that a server can run each where it belongs:
`prepare` (CPU: split into sentences, read and embed the reference clip, validate everything, so
bad input fails before any audio is computed), `generate_codes` (the talker: one batch of
sentences to codec codes; the only engine call, behind the small `CodeGenerator` interface so a
batching engine can replace `Qwen3TTS.generate`), and `finish` (the speech codec: codes to
samples, then level and silence). The first sentence goes to the talker alone, so a listener
hears it soon; the rest go `sentence_batch` at a time (one `generate` call with several requests)
and come out in order. Whole and streamed speech take the same batches, so with a seed they give
the same audio.

For in-context voice cloning the reference clip's codes lead each sentence's codes into the codec
(as the reference does, for a seamless voice) and the clip's share of the audio is cut off again.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from ferrum.audio.io import load_audio, resample
from ferrum.audio.speech_sentences import split_sentences
from ferrum.audio.tts import (
    PIPER_ONLY,
    SpeechChunk,
    SpeechOptions,
    SpeechResult,
    check_shared_options,
    level,
    reject_options,
)
from ferrum.device import Backend
from ferrum.errors import AudioDecodeError, InvalidInputError
from ferrum.models.qwen3_tts.config import SPEAKER_SAMPLE_RATE
from ferrum.models.qwen3_tts.generate import GenerationOptions
from ferrum.models.qwen3_tts.model import Qwen3TTS
from ferrum.models.qwen3_tts.prompt import (
    SIZES_WITHOUT_INSTRUCT,
    SpeechRequest,
    VoiceClonePrompt,
    check_request,
)
from ferrum.models.qwen3_tts.sampling import SamplingOptions

DEFAULT_SENTENCE_BATCH = 4  # sentences per talker call (one batch of decoding steps)
MIN_REF_AUDIO_S = 0.25  # a shorter reference clip holds too little voice to clone
AUTO_LANGUAGE = "auto"

# Before the unified options type this module had its own; the name still works.
Qwen3SpeechOptions = SpeechOptions


def is_qwen3_tts_dir(spec: str | Path | None) -> bool:
    """Whether `spec` names a Qwen3-TTS checkpoint folder (config.json of model_type qwen3_tts)."""
    if spec is None:
        return False
    config = Path(spec).expanduser() / "config.json"
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "qwen3_tts"
    except (OSError, ValueError, AttributeError):
        return False


class CodeGenerator(Protocol):
    """What turns talker requests into codec codes (`Qwen3TTS`, or a batching engine)."""

    def generate(
        self, requests: list[SpeechRequest], options: GenerationOptions
    ) -> list[Tensor]: ...


@dataclass(frozen=True)
class Qwen3Job:
    """A text made ready for the talker by `Qwen3Synthesizer.prepare`."""

    requests: list[SpeechRequest]  # one per sentence, in order
    generation: GenerationOptions  # how the talker samples (its seed: the first batch's)
    options: SpeechOptions  # what `finish` applies (level, silence)

    def generation_for(self, first: int) -> GenerationOptions:
        """The options of the batch starting at sentence `first`: a seed of its own, so that
        batches do not repeat one another's random draws."""
        seed = self.generation.seed
        return self.generation if seed is None else replace(self.generation, seed=seed + first)


class Qwen3Synthesizer:
    """Speaks text with a Qwen3-TTS model folder (Base, CustomVoice or VoiceDesign).

    `generator` replaces the model's own batch generation, e.g. with a continuous-batching
    engine over the same model (`synth.generator = Qwen3TTSEngine(synth.tts)`, set after
    loading); `sentence_batch` is how many sentences go to it at a time."""

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        sentence_batch: int = DEFAULT_SENTENCE_BATCH,
        generator: CodeGenerator | None = None,
        dtype: str = "auto",
    ) -> None:
        if sentence_batch < 1:
            raise InvalidInputError(f"sentence_batch must be >= 1, got {sentence_batch}")
        self.path = Path(path).expanduser()
        # auto: bf16 on GPUs (as the reference runs there), float32 on the CPU
        self.backend = Backend.resolve(device, dtype)
        self.tts = Qwen3TTS(self.path, self.backend.device, self.backend.dtype)
        self.codec = self.tts.codec
        self.sentence_batch = sentence_batch
        self.generator: CodeGenerator = generator or self.tts

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind(self) -> str:
        """The model kind: base (voice clone), custom_voice (named speakers), voice_design."""
        return self.tts.config.model_type

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def speakers(self) -> list[str]:
        """The named speakers one may pick (CustomVoice models; none for the others)."""
        return self.tts.speakers if self.kind == "custom_voice" else []

    @property
    def languages(self) -> list[str]:
        return self.tts.languages

    def synthesize(self, text: str, options: SpeechOptions | None = None) -> SpeechResult:
        """The whole utterance of `text`, sentences spoken in order."""
        job = self.prepare(text, options)
        chunks = [c.samples for c in self._chunks(job)]
        return SpeechResult(np.concatenate(chunks), self.sample_rate)

    def stream(self, text: str, options: SpeechOptions | None = None) -> Iterator[SpeechChunk]:
        """Each sentence of `text` as soon as it is spoken; bad input raises before any audio is
        computed."""
        return self._chunks(self.prepare(text, options))

    def prepare(self, text: str, options: SpeechOptions | None = None) -> Qwen3Job:
        """Validate the options, read the reference clip, split `text` into one request per
        sentence; InvalidInputError (before any audio is computed) for anything wrong."""
        options = options or SpeechOptions()
        self._check(options)
        sentences = split_sentences(text or "")
        if not sentences:
            raise InvalidInputError("nothing to say: the text is empty")
        voice = self._voice(options)
        speaker = None if options.speaker is None else str(options.speaker)
        language = options.language or AUTO_LANGUAGE
        requests = [
            SpeechRequest(s, language, speaker=speaker, instruct=options.instruct, voice=voice)
            for s in sentences
        ]
        check_request(self.tts.config, requests[0])  # the others differ only in their text
        return Qwen3Job(requests, self._generation(options), options)

    def batches(self, job: Qwen3Job) -> Iterator[tuple[int, list[SpeechRequest]]]:
        """(index of the first sentence, requests) of each talker call, in order: the first
        sentence alone, then `sentence_batch` at a time."""
        start = 0
        while start < len(job.requests):
            size = 1 if start == 0 else self.sentence_batch
            yield start, job.requests[start : start + size]
            start += size

    def generate_codes(
        self, requests: list[SpeechRequest], options: GenerationOptions
    ) -> list[Tensor]:
        """Codec codes (frames, Q) of each request: the one call into the talker."""
        return self.generator.generate(requests, options)

    def finish(self, codes: Tensor, request: SpeechRequest, options: SpeechOptions) -> np.ndarray:
        """One sentence's codes -> float32 samples in [-1, 1], leveled, silence appended."""
        samples = level(self._decode(codes, request.voice), bool(options.normalize), options.volume)
        silence = np.zeros(round(options.sentence_silence * self.sample_rate), np.float32)
        return np.concatenate([samples, silence])

    def _chunks(self, job: Qwen3Job) -> Iterator[SpeechChunk]:
        for first, requests in self.batches(job):
            codes = self.generate_codes(requests, job.generation_for(first))
            for i, (request, c) in enumerate(zip(requests, codes, strict=True)):
                samples = self.finish(c, request, job.options)
                yield SpeechChunk(samples, self.sample_rate, first + i, request.text)

    def _check(self, options: SpeechOptions) -> None:
        reject_options(
            options, PIPER_ONLY, "is for Piper voices; Qwen3-TTS models have no such knob"
        )
        check_shared_options(options)
        if options.max_new_tokens is not None and options.max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be >= 1, got {options.max_new_tokens}")
        if options.ref_text and options.ref_audio is None:
            raise InvalidInputError("--ref-text is the transcript of --ref-audio; give the clip")
        if options.instruct and not self._uses_instruct():
            raise InvalidInputError(
                f"this {self.kind} model ({self.name}) does not follow instructions (--instruct); "
                "use a VoiceDesign model (or a 1.7B CustomVoice one)"
            )

    def _uses_instruct(self) -> bool:
        config = self.tts.config
        if config.model_type == "voice_design":
            return True
        return (
            config.model_type == "custom_voice" and config.model_size not in SIZES_WITHOUT_INSTRUCT
        )

    def _generation(self, options: SpeechOptions) -> GenerationOptions:
        overrides: dict[str, object] = {"seed": options.seed}
        if options.max_new_tokens is not None:
            overrides["max_new_tokens"] = options.max_new_tokens
        generation = self.tts.default_options(**overrides)
        if options.greedy:
            argmax = SamplingOptions(do_sample=False)
            generation = replace(generation, talker=argmax, code_predictor=argmax)
        return generation

    def _voice(self, options: SpeechOptions) -> VoiceClonePrompt | None:
        """The reference voice of a Base model (read once, shared by every sentence)."""
        if options.ref_audio is None:
            return None
        if self.kind != "base":
            raise InvalidInputError(
                f"this is a {self.kind} model; voice cloning (--ref-audio) needs a Base model"
            )
        clip = read_clip(options.ref_audio, SPEAKER_SAMPLE_RATE)
        if len(clip) < MIN_REF_AUDIO_S * SPEAKER_SAMPLE_RATE:
            raise InvalidInputError(
                f"the reference clip is {len(clip) / SPEAKER_SAMPLE_RATE:.2f} s long; give at "
                f"least {MIN_REF_AUDIO_S} s of the voice (a few seconds clone best)"
            )
        x_vector_only = not (options.ref_text or "").strip()
        return self.tts.voice_clone_prompt(
            torch.from_numpy(clip), SPEAKER_SAMPLE_RATE, options.ref_text, x_vector_only
        )

    def _decode(self, codes: Tensor, voice: VoiceClonePrompt | None) -> np.ndarray:
        """Codes (frames, Q) -> float32 samples in [-1, 1]."""
        prefix = voice.ref_codes if voice is not None else None
        if codes.shape[0] == 0:
            return np.zeros(0, np.float32)
        whole = codes if prefix is None else torch.cat((prefix.to(codes.device), codes), dim=0)
        with torch.inference_mode():
            audio = self.codec.decode(whole[None])[0].float().cpu().numpy()
        if prefix is not None:
            audio = audio[int(prefix.shape[0] / whole.shape[0] * audio.shape[0]) :]
        return np.clip(audio, -1.0, 1.0).astype(np.float32)


def read_clip(source: str | Path | bytes, sample_rate: int) -> np.ndarray:
    """A reference clip (a file's path, or the bytes of an audio file) as mono float32 samples at
    `sample_rate`; AudioDecodeError if it is not audio."""
    if not isinstance(source, bytes):
        return load_audio(source, sample_rate)
    if not source:
        raise AudioDecodeError("the reference clip is empty")
    try:
        import soundfile

        data, rate = soundfile.read(io.BytesIO(source), dtype="float32", always_2d=True)
    except Exception:  # not a format libsndfile reads (or no soundfile): let ffmpeg try
        with tempfile.NamedTemporaryFile(prefix="ferrum-clip-") as f:
            f.write(source)
            f.flush()
            try:
                return load_audio(f.name, sample_rate)
            except AudioDecodeError as e:  # its message names our temporary file: say it anew
                raise AudioDecodeError(
                    "the reference clip is not a decodable audio file (wav, flac, mp3, ogg …)"
                ) from e
    if data.shape[0] == 0:
        raise AudioDecodeError("the reference clip holds no audio samples")
    mono = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    return resample(mono, int(rate), sample_rate).numpy()
