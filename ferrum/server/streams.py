"""Engine requests as the routers use them.

A request's prompts are submitted together and each stream's first output is awaited before any
response byte is sent: validation errors (prompt too long, queue full) surface there, so they get
a real HTTP status instead of an error event inside a 200 stream. Every wait runs under the
request's deadline. Leaving a stream (disconnect, timeout, error) closes the engine's iterator,
which aborts the request and frees its KV blocks before the engine's next step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from starlette.requests import Request

from ferrum.outputs import RequestOutput
from ferrum.sampling_params import SamplingParams
from ferrum.server.llm_service import ServedLLM

T = TypeVar("T")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the reply
OnFinished = Callable[[RequestOutput], None]


class Deadline:
    """The moment a request runs out of time (never, without --request-timeout)."""

    def __init__(self, timeout_s: float | None):
        self.at = None if timeout_s is None else time.monotonic() + timeout_s

    async def wait(self, awaitable: Awaitable[T]) -> T:
        if self.at is None:
            return await awaitable
        return await asyncio.wait_for(awaitable, max(self.at - time.monotonic(), 0.0))


class EngineStream:
    """One engine request whose first output has arrived, iterated to its final output."""

    def __init__(
        self,
        index: int,
        outputs: AsyncIterator[RequestOutput],
        first: RequestOutput,
        deadline: Deadline,
        on_finished: OnFinished | None,
    ):
        self.index = index  # which prompt of the HTTP request
        self._outputs = outputs
        self._first: RequestOutput | None = first
        self._deadline = deadline
        self._on_finished = on_finished

    async def __aiter__(self) -> AsyncIterator[RequestOutput]:
        try:
            out = self._first
            self._first = None
            while out is not None:
                yield out
                if out.finished:
                    if self._on_finished is not None:
                        self._on_finished(out)
                    return
                out = await self._deadline.wait(self._outputs.__anext__())
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self._outputs.aclose()  # type: ignore[attr-defined]


async def open_streams(
    llm: ServedLLM,
    prompts: Sequence[str | list[int]],
    params: SamplingParams,
    request_id: str,
    deadline: Deadline,
    on_finished: OnFinished | None = None,
) -> list[EngineStream]:
    """Submit every prompt and wait for each one's first output; on any error none is left."""
    ids = [request_id] if len(prompts) == 1 else [f"{request_id}-{i}" for i in range(len(prompts))]
    iterators = [llm.generate(p, params, rid) for p, rid in zip(prompts, ids)]
    firsts: list[Any] = await asyncio.gather(
        *(deadline.wait(it.__anext__()) for it in iterators), return_exceptions=True
    )
    errors = [f for f in firsts if isinstance(f, BaseException)]
    if errors:
        for it in iterators:
            await it.aclose()  # type: ignore[attr-defined]
        raise errors[0]
    return [
        EngineStream(i, it, first, deadline, on_finished)
        for i, (it, first) in enumerate(zip(iterators, firsts))
    ]


_DONE = object()


async def merge(streams: list[EngineStream]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Outputs of several streams as they come, tagged with the stream's prompt index."""
    if len(streams) == 1:
        try:
            async for out in streams[0]:
                yield 0, out
        finally:
            await streams[0].aclose()
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(stream: EngineStream) -> None:
        try:
            async for out in stream:
                queue.put_nowait((stream.index, out))
        except Exception as e:  # handed to the consumer, which raises it
            queue.put_nowait((stream.index, e))
        finally:
            queue.put_nowait((stream.index, _DONE))

    tasks = [asyncio.ensure_future(pump(s)) for s in streams]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await stream.aclose()


async def collect(streams: list[EngineStream]) -> list[RequestOutput]:
    """The final output of every stream, in prompt order."""
    final: dict[int, RequestOutput] = {}
    async for index, out in merge(streams):
        final[index] = out
    return [final[i] for i in range(len(streams))]


class ClientDisconnected(Exception):
    """The client went away before its (non-streamed) response was ready."""


async def until_disconnect(request: Request, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`, cancelling it (and so aborting its engine requests) if the client
    disconnects first. Streamed responses need no such watch: Starlette closes their generator."""
    work = asyncio.ensure_future(awaitable)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
        watch.cancel()
    if not work.cancelled():
        return work.result()
    raise ClientDisconnected()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def complete(
    request: Request,
    llm: ServedLLM,
    prompts: Sequence[str | list[int]],
    params: SamplingParams,
    request_id: str,
    deadline: Deadline,
    on_finished: OnFinished | None = None,
) -> list[RequestOutput] | None:
    """Every prompt run to its end, for a non-streamed reply; None if the client left first."""

    async def run() -> list[RequestOutput]:
        streams = await open_streams(llm, prompts, params, request_id, deadline, on_finished)
        return await collect(streams)

    try:
        return await until_disconnect(request, run())
    except ClientDisconnected:
        return None
