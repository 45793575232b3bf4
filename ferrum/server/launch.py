"""Running the app: load models into a `ServerState`, bind, serve with uvicorn, drain on stop.

Each modality has its loader here (`load_llm`, `load_embedder`, `load_transcriber`,
`load_synthesizer`): it loads the library's object, wraps it in the handle its router drives and
names it for clients. `routers()` is every modality's router, for `create_app(extra_routers=)`.

SIGTERM (or Ctrl-C) stops accepting connections, lets in-flight requests finish for up to
`shutdown_timeout` seconds (then cancels them, which aborts them in the engine), closes the
engines and returns normally, so the process exits 0. A second Ctrl-C forces the exit.
"""

from __future__ import annotations

import contextlib
import math
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import APIRouter, FastAPI

from ferrum.errors import InvalidInputError
from ferrum.server import embeddings, speech, transcriptions
from ferrum.server.embeddings import EMBEDDING_KIND, ServedEmbedder
from ferrum.server.llm_service import ServedLLM
from ferrum.server.registry import LLM_KIND, ServedModel
from ferrum.server.speech import SPEECH_KIND, ServedSynthesizer
from ferrum.server.transcriptions import TRANSCRIPTION_KIND, ServedTranscriber

DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0  # grace period for in-flight requests after SIGTERM
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class LoadedLLM:
    """A model loaded for serving, and what start-up reports about it."""

    model: ServedModel
    spec: str  # what the model was loaded from
    load_seconds: float
    device: str
    max_model_len: int


def load_llm(
    spec: str | None,
    *,
    served_model_name: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    max_waiting: int | None = None,
    **engine_options,
) -> LoadedLLM:
    """Load an LLM and wrap it for the server (its engine loop starts in a thread)."""
    from ferrum.llm import LLM

    llm = LLM(spec, device=device, dtype=dtype, **engine_options)
    served = ServedLLM.from_llm(llm, max_waiting)
    report = llm.load_report
    name = served_model_name or report.spec
    aliases = () if name == report.spec else (report.spec,)
    model = ServedModel(name, LLM_KIND, served, aliases=aliases, close=served.close)
    backend = llm.engine.backend
    device_name = f"{backend.device} ({str(backend.dtype).removeprefix('torch.')})"
    return LoadedLLM(model, report.spec, report.seconds, device_name, llm.engine.max_model_len)


@dataclass
class LoadedModel:
    """A model of another modality loaded for serving, and what start-up reports about it."""

    model: ServedModel
    spec: str  # what the model was loaded from
    load_seconds: float
    device: str


DEFAULT_SPEC = "default"  # on the command line: the modality's embedded default model


def routers() -> list[APIRouter]:
    """The routers of the modalities beside the LLM (a request for a kind that is not served
    is a 404 naming the served models)."""
    return [embeddings.router, transcriptions.router, speech.router]


def load_embedder(
    spec: str | None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    allowed_local_media: str | Path | None = None,
) -> LoadedModel:
    """An embedding model (`None` or "default": the embedded all-MiniLM-L6-v2)."""
    from ferrum.text.embed import Embedder

    media = _media_dir(allowed_local_media)  # checked first: a typo should not wait for a load
    start = time.perf_counter()
    embedder = Embedder(_spec(spec), device=device, dtype=dtype)
    handle = ServedEmbedder(embedder, media)
    name, aliases = _names(embedder.model_name, spec)
    model = ServedModel(name, EMBEDDING_KIND, handle, aliases=aliases, close=handle.close)
    precision = embedder.precision
    dtype_name = str(precision.compute_dtype).removeprefix("torch.")
    device_name = f"{precision.device} ({dtype_name})"
    return LoadedModel(model, embedder.model_name, time.perf_counter() - start, device_name)


def load_transcriber(spec: str | None, *, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """A Whisper model (`None` or "default": the embedded whisper tiny.en)."""
    from ferrum.audio.checkpoint import DEFAULT_MODEL
    from ferrum.audio.transcribe import Transcriber

    start = time.perf_counter()
    transcriber = Transcriber(_spec(spec), device=device, dtype=dtype)
    handle = ServedTranscriber(transcriber)
    name, aliases = _names(_spec(spec) or DEFAULT_MODEL, spec)
    model = ServedModel(name, TRANSCRIPTION_KIND, handle, aliases=aliases, close=handle.close)
    backend = transcriber.checkpoint.backend
    device_name = f"{backend.device} ({str(backend.dtype).removeprefix('torch.')})"
    return LoadedModel(model, transcriber.name, time.perf_counter() - start, device_name)


def load_synthesizer(
    spec: str | None, *, device: str = "auto", allowed_local_media: str | Path | None = None
) -> LoadedModel:
    """A Piper voice or a Qwen3-TTS folder (`None` or "default": the embedded
    en_US-joe-medium); reference clips may be read from `allowed_local_media`."""
    from ferrum.audio.speech import load_synthesizer as load

    media = _media_dir(allowed_local_media)  # checked first: a typo should not wait for a load
    start = time.perf_counter()
    synthesizer = load(_spec(spec), device=device)
    handle = ServedSynthesizer(synthesizer, allowed_media=media)
    name, aliases = _names(handle.name, spec)
    model = ServedModel(name, SPEECH_KIND, handle, aliases=aliases, close=handle.close)
    backend = synthesizer.backend
    device_name = f"{backend.device} ({str(backend.dtype).removeprefix('torch.')})"
    source = _spec(spec) or handle.name
    return LoadedModel(model, source, time.perf_counter() - start, device_name)


def _spec(spec: str | None) -> str | None:
    return None if spec is None or spec.strip().lower() in ("", DEFAULT_SPEC) else spec


def _names(canonical: str, spec: str | None) -> tuple[str, tuple[str, ...]]:
    """What clients call a model: a folder's name for a local path (the path as an alias),
    else its canonical name; the spec it was loaded by is an alias too."""
    path = Path(canonical).expanduser()
    name = path.name if path.is_absolute() or path.exists() else canonical
    given = _spec(spec)
    aliases = tuple(dict.fromkeys(a for a in (canonical, given) if a and a != name))
    return name, aliases


def _media_dir(folder: str | Path | None) -> Path | None:
    if folder is None:
        return None
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise InvalidInputError(f"--allowed-local-media {folder}: not a folder")
    return path.resolve()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (bound before the server starts, so its address can be printed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as e:
        raise InvalidInputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server, except that a stop signal ends `run` normally (exit status 0) instead
    of re-raising the signal after the graceful shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def make_server(
    app: FastAPI,
    *,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
    log_level: str = "info",
    access_log: bool = True,
) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        timeout_graceful_shutdown=max(math.ceil(shutdown_timeout), 1),
        log_level=log_level,
        access_log=access_log,
        lifespan="off",
    )
    return _Server(config)


def run(server: uvicorn.Server, sock: socket.socket) -> None:
    """Serve on `sock` until a stop signal (or `server.should_exit`), then drain."""
    server.run(sockets=[sock])
