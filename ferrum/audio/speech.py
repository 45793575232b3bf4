"""The one entry to text to speech: a model spec in, the right engine out, then speak.

    import ferrum
    result = ferrum.synthesize("Hello there.")                       # the default Piper voice
    result = ferrum.synthesize("Hello.", "Qwen3-TTS-12Hz-0.6B-CustomVoice", speaker="vivian")
    for chunk in ferrum.synthesize_stream(long_text, "voice.onnx"):  # sentence by sentence
        play(chunk.samples, chunk.sample_rate)

A spec is a Qwen3-TTS checkpoint folder (config.json of model_type qwen3_tts) or anything a Piper
voice may be named by (a built-in voice name or alias, an .onnx file, a folder with one). Both
engines take the same `SpeechOptions` and give the same `SpeechResult` / `SpeechChunk`s; an
option that does not apply to the engine's family is an InvalidInputError saying so.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from ferrum.audio.tts import SpeechChunk, SpeechOptions, SpeechResult, Synthesizer
from ferrum.device import Backend
from ferrum.errors import InvalidInputError


class SpeechSynthesizer(Protocol):
    """What every speech engine offers (Piper's `Synthesizer`, `Qwen3Synthesizer`)."""

    backend: Backend

    @property
    def name(self) -> str: ...

    @property
    def sample_rate(self) -> int: ...

    @property
    def speakers(self) -> list[str]: ...

    def synthesize(self, text: str, options: SpeechOptions | None = None) -> SpeechResult: ...

    def stream(self, text: str, options: SpeechOptions | None = None) -> Iterator[SpeechChunk]: ...


def load_synthesizer(spec: str | Path | None = None, device: str = "auto") -> SpeechSynthesizer:
    """The engine for `spec`: a `Qwen3Synthesizer` for a Qwen3-TTS folder, else a Piper
    `Synthesizer` (None: the default voice). ModelNotFoundError / CheckpointError if neither."""
    from ferrum.audio.qwen3_tts import Qwen3Synthesizer, is_qwen3_tts_dir

    if is_qwen3_tts_dir(spec):
        return Qwen3Synthesizer(Path(str(spec)), device=device)
    return Synthesizer(spec, device=device)


def synthesize(
    text: str,
    model: str | Path | SpeechSynthesizer | None = None,
    *,
    device: str = "auto",
    options: SpeechOptions | None = None,
    **fields: Any,
) -> SpeechResult:
    """Speak `text` with `model` (a spec, or an engine from `load_synthesizer`; None: the default
    voice). Options come as `options=` and/or keyword fields of SpeechOptions (speed, speaker,
    language, instruct, ref_audio, ref_text, seed, …); the keywords win."""
    engine = _engine(model, device)
    return engine.synthesize(text, speech_options(options, **fields))


def synthesize_stream(
    text: str,
    model: str | Path | SpeechSynthesizer | None = None,
    *,
    device: str = "auto",
    options: SpeechOptions | None = None,
    **fields: Any,
) -> Iterator[SpeechChunk]:
    """As `synthesize`, but each sentence as soon as it is spoken. Bad input raises here, before
    any audio is computed."""
    engine = _engine(model, device)
    return engine.stream(text, speech_options(options, **fields))


def speech_options(options: SpeechOptions | None = None, **fields: Any) -> SpeechOptions:
    """`options` (or the defaults) with `fields` replaced; InvalidInputError for an unknown one."""
    known = {f.name for f in dataclasses.fields(SpeechOptions)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InvalidInputError(
            f"unknown speech option {unknown[0]!r}; the options are: {', '.join(sorted(known))}"
        )
    return dataclasses.replace(options or SpeechOptions(), **fields)


_loaded: dict[tuple[str, str], SpeechSynthesizer] = {}  # the last engine `synthesize` loaded
_loaded_lock = threading.Lock()


def _engine(model: str | Path | SpeechSynthesizer | None, device: str) -> SpeechSynthesizer:
    """An engine given as such, or the one for a spec: kept loaded for the next call with the
    same spec and device (only the last one, so switching models frees the previous)."""
    if model is not None and not isinstance(model, (str, Path)):
        return model
    key = (str(model) if model is not None else "", device)
    with _loaded_lock:
        if key not in _loaded:
            _loaded.clear()
            _loaded[key] = load_synthesizer(model, device)
        return _loaded[key]
