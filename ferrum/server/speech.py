"""`POST /v1/audio/speech`: text → speech with a Piper voice, whole or streamed per sentence.

`voice` names the served voice (its name, e.g. `en_US-joe-medium`, or an alias such as `default`)
or, for a multi-speaker voice, one of its speakers; anything else is a 400 listing the choices.
Audio comes at the voice's own sample rate (the `X-Sample-Rate` header says which; OpenAI's
`pcm` is 24 kHz, a Piper voice's is usually 22.05 kHz). `speed` is OpenAI's (0.25 to 4); `seed`,
ferrum's extension, fixes the voice's noise so the same request gives the same audio.

Without `stream_format` the reply is the whole file, sent when all of it is spoken. With
`stream_format="audio"` (or `stream: true`) it is one file sent in chunked transfer, a chunk as
each sentence is spoken; with `stream_format="sse"` the same chunks come base64-encoded in
`speech.audio.delta` events, then a `speech.audio.done` event. Input errors (empty or
unspeakable text, unknown voice, bad speed) are found before any audio is computed, so they are
real 400s even when streaming.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from ferrum.audio.encode import MEDIA_TYPES, encode_audio
from ferrum.audio.tts import VOICE_ALIASES, SpeechChunk, SpeechOptions, Synthesizer
from ferrum.errors import InvalidInputError
from ferrum.server.audio_stream import chunk_encoder
from ferrum.server.errors import as_api_error
from ferrum.server.offload import ModelWorker
from ferrum.server.protocol_audio import SpeechRequest
from ferrum.server.sse import SSE_HEADERS
from ferrum.server.state import server_state
from ferrum.server.streams import Deadline

SPEECH_KIND = "speech"
log = logging.getLogger("ferrum.server")

router = APIRouter()


class ServedSynthesizer:
    """What the speech router drives for a model of kind "speech"."""

    def __init__(self, synthesizer: Synthesizer, worker: ModelWorker | None = None) -> None:
        self.synthesizer = synthesizer
        self.worker = worker or ModelWorker("piper")

    @property
    def name(self) -> str:
        return self.synthesizer.files.name

    @property
    def sample_rate(self) -> int:
        return self.synthesizer.sample_rate

    @property
    def voices(self) -> list[str]:
        """What `voice` may be: the voice's name, then its speakers (multi-speaker voices)."""
        return [self.name, *self.synthesizer.speakers]

    def speaker(self, voice: str | None) -> str | None:
        """The speaker a request's `voice` picks (None: the voice's default speaker)."""
        if voice is None or voice == self.name or VOICE_ALIASES.get(voice) == self.name:
            return None
        if voice in self.synthesizer.speakers:
            return voice
        raise InvalidInputError(
            f"unknown voice {voice!r}; this server speaks with: {', '.join(self.voices)}"
        )

    def speak(self, text: str, options: SpeechOptions, fmt: str) -> bytes:
        """The whole utterance as a file (blocking: runs on the worker thread)."""
        result = self.synthesizer.synthesize(text, options)
        return encode_audio(result.samples, result.sample_rate, fmt)

    async def health(self) -> dict[str, Any]:
        return {"busy": self.worker.busy, "sample_rate": self.sample_rate, "voices": self.voices}

    def close(self) -> None:
        self.worker.close()


@router.post("/v1/audio/speech", response_model=None)
async def create_speech(body: SpeechRequest, request: Request) -> Response:
    state = server_state(request)
    served = state.models.get(body.model, SPEECH_KIND)
    handle: ServedSynthesizer = served.handle
    if body.instructions:
        raise InvalidInputError("instructions are not supported: Piper voices speak as trained")
    options = SpeechOptions(speed=body.speed, speaker=handle.speaker(body.voice), seed=body.seed)
    fmt = body.response_format
    headers = {"X-Sample-Rate": str(handle.sample_rate)}
    deadline = Deadline(state.config.request_timeout)
    stream_format = body.stream_format or ("audio" if body.stream else None)
    if stream_format is None:
        audio = await handle.worker.run(deadline, handle.speak, body.input, options, fmt)
        return Response(audio, media_type=MEDIA_TYPES[fmt], headers=headers)
    # validates and phonemizes; a bad input raises here, before the response starts
    chunks = await handle.worker.run(deadline, handle.synthesizer.stream, body.input, options)
    encoded = _encoded_chunks(handle, chunks, fmt, deadline)
    if stream_format == "sse":
        return StreamingResponse(
            _sse_events(encoded), media_type="text/event-stream", headers=SSE_HEADERS | headers
        )
    return StreamingResponse(encoded, media_type=MEDIA_TYPES[fmt], headers=headers)


async def _encoded_chunks(
    handle: ServedSynthesizer, chunks: Iterator[SpeechChunk], fmt: str, deadline: Deadline
) -> AsyncIterator[bytes]:
    """Each sentence's audio, encoded, as soon as it is spoken."""
    encoder = chunk_encoder(fmt, handle.sample_rate)
    try:
        while (chunk := await handle.worker.run(deadline, next, chunks, None)) is not None:
            data = await handle.worker.run(deadline, encoder.feed, chunk.samples)
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
