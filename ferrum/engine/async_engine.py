"""Drives an `LLMEngine` from a background thread for asyncio callers (the HTTP server).

The engine is single-threaded: every call that touches it (add, abort, step) runs on the loop
thread, fed through a command queue. `generate` is an async iterator of `RequestOutput`s with
deltas; leaving it early (client disconnect, cancellation) aborts the request, which frees its KV
blocks before the next step.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any

from ferrum.engine.llm_engine import EngineStats, LLMEngine
from ferrum.errors import EngineDeadError, QueueFullError
from ferrum.outputs import RequestOutput
from ferrum.sampling_params import SamplingParams

log = logging.getLogger("ferrum.engine")

_IDLE_WAIT_S = 0.05  # how long the idle loop blocks on the command queue


class AsyncLLMEngine:
    def __init__(self, engine: LLMEngine, max_waiting: int | None = None):
        self.engine = engine
        self.max_waiting = max_waiting
        self._commands: queue.Queue[tuple[Callable[[], Any], Future]] = queue.Queue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="ferrum-engine", daemon=True)
        self._thread.start()

    # ---- called from asyncio ------------------------------------------------------------------

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    async def generate(
        self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[RequestOutput]:
        """Queue a request and yield its outputs as steps produce them. Validation errors
        (too long, bad ids, full queue) raise here, before anything is yielded."""
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue = asyncio.Queue()
        rid = await self._call(lambda: self._add(prompt, params, request_id, loop, outputs))
        finished = False
        try:
            while not finished:
                item = await outputs.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            if not finished:
                self.abort(rid)

    def abort(self, request_id: str) -> None:
        """Abort from any thread; takes effect before the engine's next step."""
        self._submit(lambda: self._abort(request_id))

    async def stats(self) -> EngineStats:
        return await self._call(self.engine.stats)

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.engine.close()  # stops tensor-parallel workers

    async def _call(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.wrap_future(self._submit(fn))

    def _submit(self, fn: Callable[[], Any]) -> Future:
        fut: Future = Future()
        if not self.is_alive:
            why = f"it failed: {self.error}" if self.error else "it was shut down"
            fut.set_exception(EngineDeadError(f"the engine is not running ({why})"))
            return fut
        self._commands.put((fn, fut))
        return fut

    # ---- on the engine thread -----------------------------------------------------------------

    def _add(self, prompt, params, request_id, loop, outputs) -> str:
        if self.max_waiting is not None and len(self.engine.scheduler.waiting) >= self.max_waiting:
            raise QueueFullError("the server is at capacity (waiting queue full); retry shortly")
        rid = self.engine.add_request(request_id, prompt, params)
        self._streams[rid] = (loop, outputs)
        return rid

    def _abort(self, request_id: str) -> None:
        self._streams.pop(request_id, None)
        self.engine.abort_request(request_id)

    def _run_commands(self, block: bool) -> None:
        try:
            fn, fut = (
                self._commands.get(timeout=_IDLE_WAIT_S) if block else self._commands.get_nowait()
            )
        except queue.Empty:
            return
        while True:
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as e:  # delivered to the caller
                    fut.set_exception(e)
            try:
                fn, fut = self._commands.get_nowait()
            except queue.Empty:
                return

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._run_commands(block=not self.engine.has_unfinished_requests())
            if not self.engine.has_unfinished_requests():
                continue
            try:
                outputs = self.engine.step()
            except Exception as e:
                log.exception("engine step failed")
                self.error = e
                self._fail_all(EngineDeadError(f"the engine failed: {e}"))
                return
            for out in outputs:
                target = self._streams.get(out.request_id)
                if target is None:
                    continue
                if out.finished:
                    del self._streams[out.request_id]
                loop, q = target
                loop.call_soon_threadsafe(q.put_nowait, out)

    def _fail_all(self, error: BaseException) -> None:
        for loop, q in self._streams.values():
            loop.call_soon_threadsafe(q.put_nowait, error)
        self._streams.clear()
        while True:
            try:
                _, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            fut.set_exception(error)
