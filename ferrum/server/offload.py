"""Blocking model calls run off the event loop, on a model's own worker threads.

Whisper and Piper calls are plain blocking functions. Each served model gets a small thread pool
of its own (one thread by default: on a CPU, parallel forwards of one model only fight for the
same cores), so a long transcription never stalls the event loop or another model's requests.
A request that runs out of time gets its 504 at once: its call is dropped from the queue if it
has not begun, else it finishes in its thread and the result is thrown away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import ParamSpec, TypeVar

from ferrum.server.streams import Deadline

P = ParamSpec("P")
T = TypeVar("T")
DEFAULT_WORKERS = 1


class ModelWorker:
    """The worker threads of one served model."""

    def __init__(self, name: str, workers: int = DEFAULT_WORKERS) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"ferrum-{name}")
        self._busy = 0  # calls submitted and not yet finished

    @property
    def busy(self) -> int:
        return self._busy

    async def run(
        self, deadline: Deadline, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`fn(*args, **kwargs)` on a worker thread, awaited under `deadline`."""
        loop = asyncio.get_running_loop()
        self._busy += 1
        future = loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))
        future.add_done_callback(self._finished)
        return await deadline.wait(future)  # a timeout cancels the call if it has not begun

    def _finished(self, _: object) -> None:
        self._busy -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
