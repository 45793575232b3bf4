"""Running the app: load a model into a `ServerState`, bind, serve with uvicorn, drain on stop.

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
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from ferrum.errors import InvalidInputError
from ferrum.server.llm_service import ServedLLM
from ferrum.server.registry import LLM_KIND, ServedModel

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
