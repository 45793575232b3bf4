"""`POST /v1/audio/speech`: text → speech with a Piper voice or a Qwen3-TTS model, whole or
streamed per sentence.

`voice` names the served voice (its name, or an alias such as `default`) or one of its speakers
(a multi-speaker Piper voice; a Qwen3-TTS CustomVoice model, which needs one); anything else is a
400 listing the choices. For Qwen3-TTS, OpenAI's `instructions` is the VoiceDesign instruction,
and ferrum's own fields carry the rest: `language`, and for Base models a voice to clone,
`ref_audio` (a data URL, or a path under --allowed-local-media, as images are for embeddings) with
`ref_text`, its transcript (without one, only the clip's speaker embedding is used). Audio comes at
the model's own sample rate (the `X-Sample-Rate` header says which: 24 kHz for Qwen3-TTS, usually
22.05 kHz for Piper). `speed` is OpenAI's (0.25 to 4; Piper only); `seed`, ferrum's extension,
fixes the randomness so the same request gives the same audio.

Without `stream_format` the reply is the whole file, sent when all of it is spoken. With
`stream_format="audio"` (or `stream: true`) it is one file sent in chunked transfer, a chunk as
each sentence is spoken; with `stream_format="sse"` the same chunks come base64-encoded in
`speech.audio.delta` events, then a `speech.audio.done` event. Input errors (empty text, unknown
voice, an option the model does not take, a reference clip that is not audio) are found before
any audio is computed, so they are real 400s even when streaming.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from torch import Tensor

from ferrum.audio.encode import MEDIA_TYPES, encode_audio
from ferrum.audio.qwen3_tts import Qwen3Job, Qwen3Synthesizer
from ferrum.audio.qwen3_tts_engine import Qwen3TTSEngine
from ferrum.audio.speech import SpeechSynthesizer
from ferrum.audio.tts import VOICE_ALIASES, SpeechChunk, SpeechOptions
from ferrum.errors import InvalidInputError
from ferrum.server.audio_stream import chunk_encoder
from ferrum.server.errors import as_api_error
from ferrum.server.media import DATA_URL_PREFIX, REMOTE_SCHEMES, local_media_path
from ferrum.server.offload import ModelWorker
from ferrum.server.protocol_audio import SpeechRequest
from ferrum.server.sse import SSE_HEADERS
from ferrum.server.state import server_state
from ferrum.server.streams import Deadline

if TYPE_CHECKING:
    from ferrum.models.qwen3_tts.generate import GenerationOptions
    from ferrum.models.qwen3_tts.prompt import SpeechRequest as TalkerRequest

SPEECH_KIND = "speech"
log = logging.getLogger("ferrum.server")

router = APIRouter()

Prepared = Iterator[SpeechChunk] | Qwen3Job  # a Piper voice's chunks, or a Qwen3-TTS job


class ServedSynthesizer:
    """What the speech router drives for a model of kind "speech" (Piper or Qwen3-TTS)."""

    def __init__(
        self,
        synthesizer: SpeechSynthesizer,
        worker: ModelWorker | None = None,
        allowed_media: Path | None = None,
    ) -> None:
        self.synthesizer = synthesizer
        self.qwen3 = isinstance(synthesizer, Qwen3Synthesizer)
        self.worker = worker or ModelWorker("qwen3-tts" if self.qwen3 else "piper")
        self.allowed_media = allowed_media  # reference clips may be read from here (and below)
        # Qwen3-TTS: concurrent requests share the talker's decoding steps
        self.engine: Qwen3TTSEngine | None = None
        if isinstance(synthesizer, Qwen3Synthesizer):
            self.engine = Qwen3TTSEngine(synthesizer.tts)
            synthesizer.generator = self.engine

    @property
    def name(self) -> str:
        return self.synthesizer.name

    @property
    def sample_rate(self) -> int:
        return self.synthesizer.sample_rate

    @property
    def voices(self) -> list[str]:
        """What `voice` may be: the model's name (unless it needs a speaker), then its speakers."""
        speakers = self.synthesizer.speakers
        return speakers if self.qwen3 and speakers else [self.name, *speakers]

    def speaker(self, voice: str | None) -> str | None:
        """The speaker a request's `voice` picks (None: the model's default)."""
        if voice is None or voice == self.name or VOICE_ALIASES.get(voice) == self.name:
            return None
        speakers = {(s.lower() if self.qwen3 else s): s for s in self.synthesizer.speakers}
        found = speakers.get(voice.lower() if self.qwen3 else voice)
        if found is not None:
            return found
        raise InvalidInputError(
            f"unknown voice {voice!r}; this model speaks with: {', '.join(self.voices)}"
        )

    def options(self, body: SpeechRequest) -> SpeechOptions:
        """The request's fields as SpeechOptions; 400 for a field the model does not take."""
        if self.qwen3:
            if body.speed != 1.0:
                raise InvalidInputError("speed is not supported by Qwen3-TTS models; leave it 1")
        else:
            given = [
                f for f in ("instructions", "language", "ref_audio", "ref_text") if getattr(body, f)
            ]
            if given:
                raise InvalidInputError(
                    f"{given[0]} is not supported: Piper voices speak as trained "
                    "(instructions, language and voice cloning need a Qwen3-TTS model)"
                )
        return SpeechOptions(
            speed=body.speed,
            speaker=self.speaker(body.voice),
            seed=body.seed,
            language=body.language,
            instruct=body.instructions,
            ref_text=body.ref_text,
        )

    def prepare(self, text: str, options: SpeechOptions, ref_audio: str | None) -> Prepared:
        """Validate and read everything (blocking: runs on the worker thread); raises before any
        audio is computed."""
        if ref_audio is not None:
            options = replace(options, ref_audio=reference_clip(ref_audio, self.allowed_media))
        if isinstance(self.synthesizer, Qwen3Synthesizer):
            return self.synthesizer.prepare(text, options)
        return self.synthesizer.stream(text, options)

    async def synthesize_codes(
        self, deadline: Deadline, requests: list[TalkerRequest], generation: GenerationOptions
    ) -> list[Tensor]:
        """Codec codes of a batch of sentences, submitted to the batching engine beside every
        other request's; a timeout or a disconnect cancels them (their KV blocks are freed)."""
        assert self.engine is not None
        futures = [self.engine.submit(request, generation) for request in requests]
        try:
            waiting = asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
            return list(await deadline.wait(waiting))
        finally:
            for future in futures:
                future.cancel()  # no-op for the finished ones

    async def samples(self, prepared: Prepared, deadline: Deadline) -> AsyncIterator[np.ndarray]:
        """Each sentence's samples, in order, as soon as it is spoken."""
        if isinstance(prepared, Qwen3Job):
            assert isinstance(self.synthesizer, Qwen3Synthesizer)
            finish = self.synthesizer.finish
            for first, requests in self.synthesizer.batches(prepared):
                codes = await self.synthesize_codes(
                    deadline, requests, prepared.generation_for(first)
                )
                for request, c in zip(requests, codes, strict=True):
                    yield await self.worker.run(deadline, finish, c, request, prepared.options)
            return
        while (chunk := await self.worker.run(deadline, next, prepared, None)) is not None:
            yield chunk.samples

    async def health(self) -> dict[str, Any]:
        return {"busy": self.worker.busy, "sample_rate": self.sample_rate, "voices": self.voices}

    def close(self) -> None:
        self.worker.close()
        if self.engine is not None:
            self.engine.close()


def reference_clip(url: str, allowed_dir: Path | None) -> bytes | Path:
    """The audio file a request's `ref_audio` names: a data URL's bytes, or a file under the
    server's --allowed-local-media folder (never a remote URL)."""
    if url.startswith(DATA_URL_PREFIX):
        header, sep, payload = url[len(DATA_URL_PREFIX) :].partition(",")
        if not sep or not header.endswith(";base64"):
            raise InvalidInputError(
                "ref_audio must be a base64 data URL (data:audio/wav;base64,...) or a file path"
            )
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise InvalidInputError(f"ref_audio's data URL is not valid base64 ({e})") from e
    if url.split(":", 1)[0].lower() in REMOTE_SCHEMES:
        raise InvalidInputError(
            "remote ref_audio URLs are not fetched; send the clip as a data URL"
        )
    if allowed_dir is None:
        raise InvalidInputError(
            "reading ref_audio from a path is not allowed on this server: send the clip as a data "
            "URL (data:audio/wav;base64,...), or start the server with --allowed-local-media DIR"
        )
    return local_media_path(url, allowed_dir)


@router.post("/v1/audio/speech", response_model=None)
async def create_speech(body: SpeechRequest, request: Request) -> Response:
    state = server_state(request)
    served = state.models.get(body.model, SPEECH_KIND)
    handle: ServedSynthesizer = served.handle
    options = handle.options(body)
    fmt = body.response_format
    headers = {"X-Sample-Rate": str(handle.sample_rate)}
    deadline = Deadline(state.config.request_timeout)
    # validates (text, options, reference clip); a bad input raises here, before the response
    prepared = await handle.worker.run(
        deadline, handle.prepare, body.input, options, body.ref_audio
    )
    stream_format = body.stream_format or ("audio" if body.stream else None)
    if stream_format is None:
        parts = [s async for s in handle.samples(prepared, deadline)]
        audio = await handle.worker.run(
            deadline, encode_audio, np.concatenate(parts), handle.sample_rate, fmt
        )
        return Response(audio, media_type=MEDIA_TYPES[fmt], headers=headers)
    encoded = _encoded_chunks(handle, prepared, fmt, deadline)
    if stream_format == "sse":
        return StreamingResponse(
            _sse_events(encoded), media_type="text/event-stream", headers=SSE_HEADERS | headers
        )
    return StreamingResponse(encoded, media_type=MEDIA_TYPES[fmt], headers=headers)


async def _encoded_chunks(
    handle: ServedSynthesizer, prepared: Prepared, fmt: str, deadline: Deadline
) -> AsyncIterator[bytes]:
    """Each sentence's audio, encoded, as soon as it is spoken."""
    encoder = chunk_encoder(fmt, handle.sample_rate)
    try:
        async for samples in handle.samples(prepared, deadline):
            data = await handle.worker.run(deadline, encoder.feed, samples)
            if data:
                yield data
        tail = await handle.worker.run(deadline, encoder.finish)
        if tail:
            yield tail
    finally:
        encoder.close()


async def _sse_events(encoded: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """OpenAI's speech events; an error after the start is an `error` event of its own."""
    try:
        async for data in encoded:
            event = {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}
            yield f"data: {json.dumps(event)}\n\n"
    except Exception as e:
        error = as_api_error(e).body()["error"]
        yield f"data: {json.dumps({'type': 'error', 'error': error})}\n\n"
        return
    finally:
        await encoded.aclose()  # type: ignore[attr-defined]
    yield f"data: {json.dumps({'type': 'speech.audio.done'})}\n\n"
