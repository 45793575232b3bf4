"""`POST /v1/audio/transcriptions` and `/v1/audio/translations`: Whisper over multipart uploads.

The upload is written to a temporary file and decoded like any file `ferrum transcribe` reads
(WAV/FLAC in-process, everything else through ffmpeg), so anything that is not audio is a 400
that names the upload. Decoding and transcription run on the model's worker thread.

Choices where OpenAI's API leaves room:
- `temperature` 0 (the default) decodes greedily and retries hotter (0.2 … 1.0) only where the
  text repeats or is unlikely, as Whisper does; a higher value samples at that temperature alone.
- `prompt` primes the first window (Whisper's initial prompt).
- translations on an English-only model (`*.en`): the model can only hear English, and its
  English transcript is the translation, so the endpoint answers with it (as faster-whisper
  ignores the task for such models); a `language` other than English on such a model is a 400.
- `timestamp_granularities[]=word` times every word (only with verbose_json, as OpenAI).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from ferrum.audio.formats import render, verbose_json
from ferrum.audio.io import load_audio
from ferrum.audio.transcribe import TranscribeOptions, Transcriber
from ferrum.audio.transcript import TranscriptionResult
from ferrum.errors import AudioDecodeError, InvalidInputError
from ferrum.server.errors import APIError
from ferrum.server.offload import ModelWorker
from ferrum.server.protocol_audio import TranscriptionForm
from ferrum.server.state import server_state
from ferrum.server.streams import Deadline

TRANSCRIPTION_KIND = "transcription"
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # tried in turn at temperature 0
UPLOAD_CHUNK_BYTES = 1 << 20  # copied from the parsed form to the temporary file at a time
MAX_SUFFIX_CHARS = 10  # of the upload's extension, kept so the decoder sees the file type
LIST_FIELDS = ("timestamp_granularities",)  # form fields that may repeat

router = APIRouter()


class ServedTranscriber:
    """What the audio routers drive for a model of kind "transcription"."""

    def __init__(self, transcriber: Transcriber, worker: ModelWorker | None = None) -> None:
        self.transcriber = transcriber
        self.worker = worker or ModelWorker("whisper")
        self.english_only = not transcriber.checkpoint.tokenizer.multilingual

    def transcribe_file(
        self, path: Path, filename: str, options: TranscribeOptions
    ) -> TranscriptionResult:
        """Decode and transcribe one uploaded file (blocking: runs on the worker thread)."""
        try:
            samples = load_audio(path)
        except AudioDecodeError as e:  # name the upload, not our temporary file
            reason = str(e).replace(f"{path}: ", "").replace(str(path), "input")
            raise AudioDecodeError(f"the uploaded file {filename!r}: {reason}") from None
        return self.transcriber.transcribe(np.ascontiguousarray(samples), options)

    async def health(self) -> dict[str, Any]:
        return {"busy": self.worker.busy, "english_only": self.english_only}

    def close(self) -> None:
        self.worker.close()


@router.post("/v1/audio/transcriptions", response_model=None)
async def create_transcription(request: Request) -> Response:
    return await _handle(request, "transcribe")


@router.post("/v1/audio/translations", response_model=None)
async def create_translation(request: Request) -> Response:
    return await _handle(request, "translate")


async def _handle(request: Request, task: str) -> Response:
    state = server_state(request)
    async with request.form() as form:
        upload = form.get("file")
        fields = _fields(form)
        if not isinstance(upload, UploadFile):
            raise APIError(
                400,
                "file: a multipart field `file` holding the audio is required",
                code="missing_required_parameter",
                param="file",
            )
        served = state.models.get(fields.model, TRANSCRIPTION_KIND)
        handle: ServedTranscriber = served.handle
        options = _options(fields, task, handle)
        filename = upload.filename or "upload"
        with tempfile.TemporaryDirectory(prefix="ferrum-upload-") as folder:
            path = Path(folder) / f"audio{_suffix(filename)}"
            await _save(upload, path)
            deadline = Deadline(state.config.request_timeout)
            result = await handle.worker.run(
                deadline, handle.transcribe_file, path, filename, options
            )
    return _response(result, fields.response_format, task)


def _fields(form: FormData) -> TranscriptionForm:
    """The form's fields (all but the file), validated; a bad one is a 400 like a JSON field's."""
    values: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            continue
        name = key.removesuffix("[]")
        if name in LIST_FIELDS:
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    try:
        return TranscriptionForm.model_validate(values)
    except ValidationError as e:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
        ) from None


def _options(fields: TranscriptionForm, task: str, handle: ServedTranscriber) -> TranscribeOptions:
    language = fields.language
    if handle.english_only and language is not None and language.lower() != "en":
        raise InvalidInputError(
            f"this model hears English only; language {language!r} needs a multilingual model "
            "(e.g. whisper-base), or leave language out"
        )
    words = "word" in fields.timestamp_granularities
    if words and fields.response_format != "verbose_json":
        raise InvalidInputError("timestamp_granularities[]=word needs response_format=verbose_json")
    temperatures = FALLBACK_TEMPERATURES if fields.temperature == 0 else (fields.temperature,)
    return replace(
        TranscribeOptions(),
        task=task,
        language=language,
        temperature=temperatures,
        initial_prompt=fields.prompt,
        word_timestamps=words,
    )


def _suffix(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    ok = 1 < len(suffix) <= MAX_SUFFIX_CHARS and suffix[1:].isalnum()
    return suffix if ok else ""


async def _save(upload: UploadFile, path: Path) -> None:
    with path.open("wb") as out:
        while chunk := await upload.read(UPLOAD_CHUNK_BYTES):
            out.write(chunk)
    if path.stat().st_size == 0:
        raise AudioDecodeError("the uploaded file is empty")


def _response(result: TranscriptionResult, fmt: str, task: str) -> Response:
    if fmt == "json":
        return JSONResponse({"text": result.text, "usage": _usage(result)})
    if fmt == "verbose_json":
        return JSONResponse({**verbose_json(result, task), "usage": _usage(result)})
    if fmt == "text":
        return PlainTextResponse(result.text + "\n")
    media_type = "text/vtt" if fmt == "vtt" else "text/plain"
    return Response(render(result, fmt), media_type=f"{media_type}; charset=utf-8")


def _usage(result: TranscriptionResult) -> dict[str, Any]:
    """OpenAI's usage for audio models billed by time: whole seconds of input audio."""
    return {"type": "duration", "seconds": math.ceil(result.duration)}
