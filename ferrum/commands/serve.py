"""`ferrum serve`: an OpenAI-compatible HTTP server for an LLM.

Loads the model, binds, prints where it listens and how long loading took, then serves until
SIGTERM / Ctrl-C, letting in-flight requests finish (up to --shutdown-timeout) before exiting 0.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ferrum.commands import app
from ferrum.commands.options import (
    Device,
    Dtype,
    GpuMemoryUtilization,
    KvCacheMemory,
    MaxBatchedTokens,
    MaxModelLen,
    MaxNumSeqs,
    Model,
    PrefixCaching,
    engine_options,
)


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
        str, typer.Option("--max-body-size", help="Largest request body, e.g. 16MiB.")
    ] = "16MiB",
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
) -> None:
    """Serve an LLM over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions)."""
    from ferrum.config import parse_size
    from ferrum.errors import InvalidInputError
    from ferrum.server import launch
    from ferrum.server.app import create_app
    from ferrum.server.state import ServerConfig, ServerState

    if max_waiting is not None and max_waiting < 0:
        raise InvalidInputError("--max-waiting must be >= 0")
    if request_timeout is not None and request_timeout <= 0:
        raise InvalidInputError("--request-timeout must be > 0 seconds")
    config = ServerConfig(
        api_key=api_key, request_timeout=request_timeout, max_body_size=parse_size(max_body_size)
    )
    sock = launch.bind(host, port)  # before loading: a busy port fails fast
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
        ),
    )
    state = ServerState(config=config)
    state.models.add(loaded.model)
    server = launch.make_server(
        create_app(state), shutdown_timeout=shutdown_timeout, log_level=log_level
    )
    typer.echo(
        f"ferrum: {loaded.spec} loaded in {loaded.load_seconds:.1f} s on {loaded.device}, "
        f"context {loaded.max_model_len} tokens; serving it as {loaded.model.name!r} "
        f"on {launch.address(sock)}/v1",
        err=True,
    )
    try:
        launch.run(server, sock)
    finally:
        state.models.close_all()
    typer.echo("ferrum: stopped", err=True)
