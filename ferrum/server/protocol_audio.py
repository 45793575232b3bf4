"""The OpenAI wire format of the audio endpoints: transcription form fields and speech requests.

Speech requests carry OpenAI's fields plus ferrum's own for Qwen3-TTS models (`language`, and a
voice-clone reference: `ref_audio`, `ref_text`) and `seed`.

Transcriptions and translations arrive as multipart forms; their fields (everything but the file)
are validated by `TranscriptionForm`, so a bad value is the same kind of 400 as a bad JSON field.
`timestamp_granularities[]` may be repeated (as the SDKs send it) or given without the brackets.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ferrum.server.protocol import OpenAIModel

TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
SPEECH_FORMATS = ("wav", "flac", "mp3", "pcm")
MAX_SPEECH_CHARS = 4096  # of `input`, as OpenAI allows
MIN_SPEED, MAX_SPEED = 0.25, 4.0  # OpenAI's range for `speed`
MAX_REF_AUDIO_CHARS = 12 * (1 << 20)  # of a reference clip's data URL: ~9 MB of audio file


class TranscriptionForm(OpenAIModel):
    """The form fields of /v1/audio/transcriptions (translations use a subset)."""

    model: str | None = None  # optional here: with one transcription model served, it is used
    language: str | None = None  # ISO-639-1 code; None detects it (multilingual models)
    prompt: str | None = None  # primes the first window: spelling of names, style
    response_format: Literal["json", "text", "srt", "vtt", "verbose_json"] = "json"
    temperature: float = Field(0.0, ge=0, le=1)  # 0: greedy, hotter only where decoding fails
    timestamp_granularities: list[Literal["segment", "word"]] = Field(
        default_factory=lambda: ["segment"]
    )
    stream: bool = False

    @field_validator("language", "prompt", "model", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value  # HTML forms send empty fields as ""

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, value: bool) -> bool:
        if value:
            raise ValueError("streamed transcription is not supported; leave stream unset")
        return value


class SpeechRequest(OpenAIModel):
    """The JSON body of /v1/audio/speech."""

    model: str | None = None  # optional here: with one speech model served, it is used
    input: str = Field(max_length=MAX_SPEECH_CHARS)
    voice: str | None = None  # the voice's name, or a speaker of a multi-speaker voice
    response_format: Literal["wav", "flac", "mp3", "pcm"] = "mp3"  # OpenAI's default
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED)
    stream_format: Literal["audio", "sse"] | None = None  # None: the whole file at once
    stream: bool = False  # another way to ask for stream_format="audio"
    instructions: str | None = None  # OpenAI's voice direction: Qwen3-TTS VoiceDesign's instruct
    seed: int | None = Field(None, ge=0, le=2**63 - 1)  # ferrum's extension: same seed, same audio
    # ferrum's extensions for Qwen3-TTS models:
    language: str | None = None  # the text's language (a language of the model); None: auto
    ref_audio: str | None = Field(None, max_length=MAX_REF_AUDIO_CHARS)  # Base: clip to clone,
    # as a data URL (data:audio/wav;base64,...) or a path under --allowed-local-media
    ref_text: str | None = Field(None, max_length=MAX_SPEECH_CHARS)  # the clip's transcript
