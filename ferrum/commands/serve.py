"""`ferrum serve`: an OpenAI-compatible HTTP server for an LLM, embeddings, transcription, speech.

Loads the models, binds, prints where it listens and how long each model took to load, then
serves until SIGTERM / Ctrl-C, letting in-flight requests finish (up to --shutdown-timeout)
before exiting 0. `--no-llm` serves only the other modalities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ferrum.commands import app
from ferrum.commands.options import (
    AsyncScheduling,
    Device,
    Dtype,
    EnforceEager,
    GpuMemoryUtilization,
    KvCacheMemory,
    MaxBatchedTokens,
    MaxModelLen,
    MaxNumSeqs,
    Model,
    PrefixCaching,
    Quantization,
    TensorParallelSize,
    engine_options,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ferrum.server.launch import LoadedModel

DEFAULT_BODY_LIMIT = "16MiB"
AUDIO_BODY_LIMIT = "32MiB"  # with transcription served: room for OpenAI's 25 MB uploads


@app.command("serve")
def serve(
    model: Model = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free).")] = 8000,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="Require 'Authorization: Bearer KEY' on /v1.")
    ] = None,
    served_model_name: Annotated[
        str | None, typer.Option("--served-model-name", help="Model name clients use.")
    ] = None,
    max_waiting: Annotated[
        int | None,
        typer.Option("--max-waiting", help="Queued requests allowed; beyond it a 503."),
    ] = None,
    request_timeout: Annotated[
        float | None, typer.Option("--request-timeout", help="Seconds a request may take.")
    ] = None,
    max_body_size: Annotated[
        str | None,
        typer.Option(
            "--max-body-size",
            help="Largest request body, e.g. 16MiB (default; 32MiB with --transcription-model).",
        ),
    ] = None,
    shutdown_timeout: Annotated[
        float,
        typer.Option("--shutdown-timeout", help="Seconds in-flight requests get after SIGTERM."),
    ] = 30.0,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    device: Device = "auto",
    dtype: Dtype = "auto",
    max_num_seqs: MaxNumSeqs = 64,
    max_num_batched_tokens: MaxBatchedTokens = 2048,
    max_model_len: MaxModelLen = None,
    kv_cache_memory: KvCacheMemory = None,
    gpu_memory_utilization: GpuMemoryUtilization = 0.9,
    prefix_caching: PrefixCaching = True,
    enforce_eager: EnforceEager = False,
    async_scheduling: AsyncScheduling = None,
    quantization: Quantization = None,
    tensor_parallel_size: TensorParallelSize = 1,
    embedding_model: Annotated[
        str | None,
        typer.Option(
            "--embedding-model",
            help="Also serve /v1/embeddings with this model ('default': all-MiniLM-L6-v2).",
        ),
    ] = None,
    transcription_model: Annotated[
        str | None,
        typer.Option(
            "--transcription-model",
            help="Also serve /v1/audio/transcriptions and translations ('default': whisper "
            "tiny.en).",
        ),
    ] = None,
    speech_model: Annotated[
        str | None,
        typer.Option(
            "--speech-model",
            help="Also serve /v1/audio/speech with this Piper voice or Qwen3-TTS folder "
            "('default': en_US-joe-medium).",
        ),
    ] = None,
    no_llm: Annotated[
        bool, typer.Option("--no-llm", help="Serve no LLM, only the models named above.")
    ] = False,
    allowed_local_media: Annotated[
        str | None,
        typer.Option(
            "--allowed-local-media",
            help="Folder whose files requests may name by path (images, reference clips).",
        ),
    ] = None,
) -> None:
    """Serve models over an OpenAI-compatible HTTP API: an LLM (/v1/chat/completions,
    /v1/completions) and, when asked, embeddings, transcription and speech."""
    from ferrum.config import parse_size
    from ferrum.errors import InvalidInputError
    from ferrum.server import launch
    from ferrum.server.app import create_app
    from ferrum.server.state import ServerConfig, ServerState

    if max_waiting is not None and max_waiting < 0:
        raise InvalidInputError("--max-waiting must be >= 0")
    if request_timeout is not None and request_timeout <= 0:
        raise InvalidInputError("--request-timeout must be > 0 seconds")
    if no_llm and model is not None:
        raise InvalidInputError(f"--no-llm serves no LLM, but the model {model!r} was given")
    if no_llm and not (embedding_model or transcription_model or speech_model):
        raise InvalidInputError(
            "--no-llm leaves nothing to serve: add --embedding-model, --transcription-model "
            "or --speech-model (each may be 'default')"
        )
    if allowed_local_media is not None and embedding_model is None and speech_model is None:
        raise InvalidInputError(
            "--allowed-local-media is for media inputs: add a model that reads them"
        )
    if max_body_size is None:
        max_body_size = AUDIO_BODY_LIMIT if transcription_model else DEFAULT_BODY_LIMIT
    config = ServerConfig(
        api_key=api_key, request_timeout=request_timeout, max_body_size=parse_size(max_body_size)
    )
    sock = launch.bind(host, port)  # before loading: a busy port fails fast
    state = ServerState(config=config)
    banners: list[str] = []
    try:
        if not no_llm:
            loaded = launch.load_llm(
                model,
                served_model_name=served_model_name,
                device=device,
                dtype=dtype,
                max_waiting=max_waiting,
                **engine_options(
                    max_num_seqs,
                    max_num_batched_tokens,
                    max_model_len,
                    kv_cache_memory,
                    gpu_memory_utilization,
                    prefix_caching,
                    enforce_eager=enforce_eager,
                    async_scheduling=async_scheduling,
                    quantization=quantization,
                    tensor_parallel_size=tensor_parallel_size,
                ),
            )
            state.models.add(loaded.model)
            banners.append(
                f"ferrum: {loaded.spec} loaded in {loaded.load_seconds:.1f} s on {loaded.device}, "
                f"context {loaded.max_model_len} tokens; serving it as {loaded.model.name!r}"
            )
        for other in _load_others(
            embedding_model, transcription_model, speech_model, device, dtype, allowed_local_media
        ):
            state.models.add(other.model)
            banners.append(
                f"ferrum: {other.spec} loaded in {other.load_seconds:.1f} s on {other.device}; "
                f"serving it as {other.model.name!r} ({other.model.kind})"
            )
    except BaseException:
        state.models.close_all()
        raise
    app = create_app(state, extra_routers=launch.routers())
    server = launch.make_server(app, shutdown_timeout=shutdown_timeout, log_level=log_level)
    for banner in banners:
        typer.echo(f"{banner} on {launch.address(sock)}/v1", err=True)
    try:
        launch.run(server, sock)
    finally:
        state.models.close_all()
    typer.echo("ferrum: stopped", err=True)


def _load_others(
    embedding_model: str | None,
    transcription_model: str | None,
    speech_model: str | None,
    device: str,
    dtype: str,
    allowed_local_media: str | None,
) -> Iterator[LoadedModel]:
    """The non-LLM models asked for, loaded one after the other."""
    from ferrum.server import launch

    if embedding_model is not None:
        yield launch.load_embedder(
            embedding_model, device=device, dtype=dtype, allowed_local_media=allowed_local_media
        )
    if transcription_model is not None:
        yield launch.load_transcriber(transcription_model, device=device, dtype=dtype)
    if speech_model is not None:
        yield launch.load_synthesizer(
            speech_model, device=device, allowed_local_media=allowed_local_media
        )
