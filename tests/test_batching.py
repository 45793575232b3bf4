"""The one-shot batcher: order of results, cost budget, cancellation, error isolation."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import CancelledError

import pytest

from ferrum.batching import Batcher, BatchPolicy
from ferrum.errors import InvalidInputError


class Echo:
    """Work whose items are strings: cost = length; the output is the string upper-cased.
    Records every batch it ran; "bad-prepare" fails in prepare, "bad-run" poisons a batch;
    `gate` (when set) holds the forward so a test can queue items behind it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate: threading.Event | None = None
        self.started = threading.Event()

    def prepare(self, item: str) -> str:
        if item == "bad-prepare":
            raise InvalidInputError("cannot prepare this one")
        return item

    def cost(self, item: str) -> int:
        return len(item)

    def run(self, batch: list[str]) -> list[str]:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(list(batch))
        if "bad-run" in batch:
            raise RuntimeError("forward failed on bad-run")
        return [s.upper() for s in batch]


def test_results_come_back_in_submission_order_and_batches_are_sorted():
    work = Echo()
    items = ["x" * n for n in (9, 1, 5, 3, 7, 2)]
    with Batcher(work, BatchPolicy(max_batch_cost=100)) as b:
        futures = b.submit_many(items)
        assert [f.result(5) for f in futures] == [s.upper() for s in items]
    assert work.batches == [sorted(items, key=len)]


def test_cost_budget_and_item_cap_are_respected():
    work = Echo()
    items = ["y" * n for n in (4, 4, 4, 3, 3, 9, 12, 1, 1, 1, 1, 1)]
    policy = BatchPolicy(max_batch_cost=10, max_batch_items=3)
    with Batcher(work, policy) as b:
        assert [f.result(5) for f in b.submit_many(items)] == [s.upper() for s in items]
    for batch in work.batches:
        assert len(batch) <= 3
        assert sum(map(len, batch)) <= 10 or len(batch) == 1  # a 12-cost item runs alone
    assert sorted(s for batch in work.batches for s in batch) == sorted(items)
    assert ["y" * 12] in work.batches


def test_cancelled_item_is_dropped_from_its_batch():
    work = Echo()
    work.gate = threading.Event()
    with Batcher(work, BatchPolicy(max_batch_cost=100)) as b:
        first = b.submit("hold")  # occupies the forward thread until the gate opens
        assert work.started.wait(5)
        later = b.submit_many(["aa", "bb", "cc"])
        assert later[1].cancel()
        work.gate.set()
        assert first.result(5) == "HOLD"
        assert later[0].result(5) == "AA" and later[2].result(5) == "CC"
        with pytest.raises(CancelledError):
            later[1].result(5)
    assert all("bb" not in batch for batch in work.batches)


def test_errors_reach_only_the_failing_items_future():
    work = Echo()
    with Batcher(work, BatchPolicy(max_batch_cost=100)) as b:
        futures = b.submit_many(["ok1", "bad-prepare", "ok2", "bad-run", "ok3"])
        assert futures[0].result(5) == "OK1"
        assert isinstance(futures[1].exception(5), InvalidInputError)
        assert futures[2].result(5) == "OK2"
        assert isinstance(futures[3].exception(5), RuntimeError)
        assert futures[4].result(5) == "OK3"


def test_submit_async_and_concurrent_submitters():
    work = Echo()

    async def many(b: Batcher) -> list[str]:
        return list(await asyncio.gather(*(b.submit_async(f"w{i}") for i in range(20))))

    with Batcher(work, BatchPolicy(max_batch_cost=1000)) as b:
        assert asyncio.run(many(b)) == [f"W{i}" for i in range(20)]
        results: dict[int, str] = {}

        def submitter(i: int) -> None:
            results[i] = b.submit(f"t{i}").result(5)

        threads = [threading.Thread(target=submitter, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == {i: f"T{i}" for i in range(8)}


def test_closed_batcher_refuses_new_items():
    b = Batcher(Echo())
    b.close()
    with pytest.raises(Exception, match="closed"):
        b.submit("late")


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        BatchPolicy(max_batch_cost=0)
