"""The one-shot request batcher: embeddings now, transcription windows and TTS sentences later.

Design note: every one-shot model is three stages — prepare on CPU (tokenize, decode an image),
a batched forward on the device, and per-item results. The batcher owns two threads so the stages
overlap: the *prepare* thread turns submitted items into prepared inputs (one item's failure fails
only that item's future), and the *forward* thread takes what is ready, sorts it by cost inside a
window, cuts it into batches that fit a cost budget (tokens, for text), drops items whose future
was cancelled, runs each batch and resolves one future per item. A failing batch is retried item
by item, so an error reaches the future of the item that caused it and no other.

Futures are `concurrent.futures.Future`s: blocking callers `.result()` them; asyncio callers
(the HTTP server) await `submit_async`, which wraps the same future.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ferrum.errors import FerrumError

ItemT = TypeVar("ItemT")
PreparedT = TypeVar("PreparedT")
OutT = TypeVar("OutT")


class OneShotWork(Protocol[ItemT, PreparedT, OutT]):
    """What a one-shot model gives the batcher: its three stages."""

    def prepare(self, item: ItemT) -> PreparedT:
        """CPU work for one item (tokenize, decode); raise a FerrumError for bad input."""
        ...

    def cost(self, prepared: PreparedT) -> int:
        """The item's share of the batch budget (tokens for text, 1 for a fixed-size image)."""
        ...

    def run(self, batch: list[PreparedT]) -> list[OutT]:
        """One batched forward; returns one output per item, in order."""
        ...


@dataclass(frozen=True)
class BatchPolicy:
    """How the batcher forms batches."""

    max_batch_cost: int = 8192  # budget of one batch, in `cost` units (tokens for text)
    max_batch_items: int = 512  # items in one batch at most, whatever their cost
    sort_window: int = 4096  # ready items sorted together by cost before cutting batches
    release_every: int = 4096  # prepared items handed to the forward stage at a time

    def __post_init__(self) -> None:
        for name in ("max_batch_cost", "max_batch_items", "sort_window", "release_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"BatchPolicy.{name} must be ≥ 1")


@dataclass
class _Ready(Generic[PreparedT, OutT]):
    future: Future[OutT]
    prepared: PreparedT
    cost: int


_CLOSE = object()


class Batcher(Generic[ItemT, PreparedT, OutT]):
    """Runs a `OneShotWork` on submitted items in cost-bounded, length-sorted batches."""

    def __init__(
        self,
        work: OneShotWork[ItemT, PreparedT, OutT],
        policy: BatchPolicy | None = None,
        name: str = "batcher",
    ) -> None:
        self.work = work
        self.policy = policy or BatchPolicy()
        self._incoming: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._ready: deque[_Ready[PreparedT, OutT]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._preparer = threading.Thread(target=self._prepare_loop, name=f"{name}-prepare")
        self._runner = threading.Thread(target=self._forward_loop, name=f"{name}-forward")
        self._preparer.daemon = self._runner.daemon = True
        self._preparer.start()
        self._runner.start()

    # ----- submitting -------------------------------------------------------------------------
    def submit(self, item: ItemT) -> Future[OutT]:
        """Queue one item; its future resolves to the item's output (or its error)."""
        return self.submit_many([item])[0]

    def submit_many(self, items: Iterable[ItemT]) -> list[Future[OutT]]:
        """Queue items together, so they are prepared and sorted as one group."""
        if self._closed:
            raise FerrumError("the batcher is closed")
        group = [(Future(), item) for item in items]
        if group:
            self._incoming.put(group)
        return [f for f, _ in group]

    async def submit_async(self, item: ItemT) -> OutT:
        """asyncio form of `submit`: await the item's output; cancelling the task cancels it."""
        return await asyncio.wrap_future(self.submit(item))

    def close(self) -> None:
        """Stop both threads; items not yet run are cancelled."""
        if self._closed:
            return
        self._closed = True
        self._incoming.put(_CLOSE)
        self._preparer.join()
        with self._cond:
            self._cond.notify_all()
        self._runner.join()

    def __enter__(self) -> Batcher[ItemT, PreparedT, OutT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- the prepare stage ------------------------------------------------------------------
    def _prepare_loop(self) -> None:
        while True:
            group = self._incoming.get()
            if group is _CLOSE:
                return
            chunk: list[_Ready[PreparedT, OutT]] = []
            for future, item in group:  # type: ignore[attr-defined]
                if future.cancelled():
                    continue
                try:
                    prepared = self.work.prepare(item)
                    chunk.append(_Ready(future, prepared, max(1, self.work.cost(prepared))))
                except Exception as e:  # one bad item fails only its own future
                    _fail(future, e)
                if len(chunk) >= self.policy.release_every:
                    self._release(chunk)
                    chunk = []
            self._release(chunk)

    def _release(self, chunk: list[_Ready[PreparedT, OutT]]) -> None:
        if chunk:
            with self._cond:
                self._ready.extend(chunk)
                self._cond.notify()

    # ----- the forward stage ------------------------------------------------------------------
    def _forward_loop(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._closed:
                    self._cond.wait()
                if self._closed:
                    for r in self._ready:
                        r.future.cancel()
                    return
                n = min(len(self._ready), self.policy.sort_window)
                window = [self._ready.popleft() for _ in range(n)]
            window.sort(key=lambda r: r.cost)
            for batch in cut_batches(window, self.policy):
                self._run_batch(batch)

    def _run_batch(self, batch: list[_Ready[PreparedT, OutT]]) -> None:
        # A cancelled future refuses to start running: it is dropped from the batch here.
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            outputs = self.work.run([r.prepared for r in live])
        except Exception as e:
            if len(live) == 1:
                _fail(live[0].future, e)
                return
            # Retry one by one so the error lands on the item that caused it.
            for r in live:
                try:
                    r.future.set_result(self.work.run([r.prepared])[0])
                except Exception as item_error:
                    _fail(r.future, item_error)
            return
        for r, out in zip(live, outputs):
            r.future.set_result(out)


def cut_batches(items: Sequence[_Ready[PreparedT, OutT]], policy: BatchPolicy) -> list[list]:
    """Cut cost-sorted items into consecutive batches within the cost and item budgets; an item
    over the cost budget on its own runs alone."""
    batches: list[list] = []
    current: list = []
    spent = 0
    for r in items:
        over = spent + r.cost > policy.max_batch_cost or len(current) >= policy.max_batch_items
        if current and over:
            batches.append(current)
            current, spent = [], 0
        current.append(r)
        spent += r.cost
    if current:
        batches.append(current)
    return batches


def _fail(future: Future, error: BaseException) -> None:
    with contextlib.suppress(InvalidStateError):  # cancelled meanwhile: nobody is waiting
        future.set_exception(error)
