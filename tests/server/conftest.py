"""A real server on the tiny model: uvicorn in a background thread on a free loopback port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ferrum import LLM
from ferrum.server import launch
from ferrum.server.app import create_app
from ferrum.server.llm_service import ServedLLM
from ferrum.server.registry import LLM_KIND, ServedModel
from ferrum.server.state import ServerConfig, ServerState

MODEL_NAME = "tiny"
START_TIMEOUT_S = 10.0


@contextmanager
def running_server(state: ServerState) -> Iterator[str]:
    """Serve `state` on 127.0.0.1:<free port>; yields the base URL, stops and drains after."""
    sock = launch.bind("127.0.0.1", 0)
    app = create_app(state, extra_routers=launch.routers())
    server = launch.make_server(app, log_level="warning", shutdown_timeout=5)
    thread = threading.Thread(target=launch.run, args=(server, sock), daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield launch.address(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def serve_llm(llm: LLM, config: ServerConfig | None = None, **served) -> ServerState:
    state = ServerState(config=config or ServerConfig())
    handle = ServedLLM.from_llm(llm, **served)
    state.models.add(ServedModel(MODEL_NAME, LLM_KIND, handle, close=handle.close))
    return state


@pytest.fixture(scope="module")
def served_llm(tiny_llama) -> LLM:
    """The model behind the server (its engine is driven by the server's engine thread), with
    overlapped steps as on a GPU; the reference below runs its steps one after the other."""
    return LLM(str(tiny_llama), device="cpu", max_num_seqs=64, async_scheduling=True)


@pytest.fixture(scope="module")
def reference_llm(tiny_llama) -> LLM:
    """The same weights, run offline, as the reference for what the server returns."""
    return LLM(str(tiny_llama), device="cpu", max_num_seqs=64)


@pytest.fixture(scope="module")
def state(served_llm) -> Iterator[ServerState]:
    state = serve_llm(served_llm)
    yield state
    state.models.close_all()


@pytest.fixture(scope="module")
def base_url(state) -> Iterator[str]:
    with running_server(state) as url:
        yield url
