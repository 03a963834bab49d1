"""Batcher with a fake send: what goes out together, per-item and per-batch failures, a caller
that gives up, closing. No I/O; the only waits are on the fake's own gate."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from common.batch import Batcher
from common.errors import NotFound, Unavailable


class FakeSend:
    """Records each batch; doubles every int, refuses negatives per item, raises for ``"boom"``
    batches; ``gate`` (when set) holds a batch in flight until the test opens it."""

    def __init__(self) -> None:
        self.batches: list[list[object]] = []
        self.gate: asyncio.Event | None = None
        self.in_flight = asyncio.Event()

    async def __call__(self, items: list[object]) -> list[object]:
        self.batches.append(list(items))
        self.in_flight.set()
        if self.gate is not None:
            await self.gate.wait()
        if "boom" in items:
            raise Unavailable("dependency away")
        if "short" in items:
            return []
        return [NotFound(f"no {i}") if isinstance(i, int) and i < 0 else i * 2 for i in items]  # type: ignore[operator]


def batcher(send: FakeSend, max_batch: int = 100) -> Batcher[object, object]:
    return Batcher(send, max_batch=max_batch, name="test")


async def test_items_of_one_moment_go_out_together_in_order() -> None:
    send = FakeSend()
    b = batcher(send)
    results = await asyncio.gather(*(b.submit(i) for i in range(10)))
    assert results == [i * 2 for i in range(10)]
    assert send.batches == [list(range(10))]
    await b.aclose()


async def test_items_submitted_while_a_batch_is_in_flight_go_in_the_next_send() -> None:
    send = FakeSend()
    send.gate = asyncio.Event()
    b = batcher(send)
    first = asyncio.gather(*(b.submit(i) for i in range(3)))
    await send.in_flight.wait()
    later = asyncio.gather(*(b.submit(i) for i in range(10, 15)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert send.batches == [[0, 1, 2]]  # one batch in flight at a time
    send.gate.set()
    assert await first == [0, 2, 4]
    assert await later == [20, 22, 24, 26, 28]
    assert send.batches == [[0, 1, 2], [10, 11, 12, 13, 14]]
    await b.aclose()


async def test_at_most_max_batch_per_send() -> None:
    send = FakeSend()
    b = batcher(send, max_batch=4)
    assert await asyncio.gather(*(b.submit(i) for i in range(10))) == [i * 2 for i in range(10)]
    assert send.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    await b.aclose()


async def test_a_failed_send_fails_its_items_only() -> None:
    send = FakeSend()
    send.gate = asyncio.Event()
    b = batcher(send)
    doomed = asyncio.gather(b.submit("boom"), b.submit(1), return_exceptions=True)
    await send.in_flight.wait()
    fine = asyncio.gather(b.submit(2), b.submit(3))
    send.gate.set()
    first, second = await doomed
    assert isinstance(first, Unavailable) and second is first
    assert list(await fine) == [4, 6]
    await b.aclose()


async def test_per_item_exceptions() -> None:
    b = batcher(FakeSend())
    results = await asyncio.gather(b.submit(1), b.submit(-1), b.submit(2), return_exceptions=True)
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], NotFound) and results[1].detail == "no -1"
    await b.aclose()


async def test_a_wrong_number_of_results_fails_the_batch() -> None:
    b = batcher(FakeSend())
    results = await asyncio.gather(b.submit("short"), b.submit(1), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results), results
    await b.aclose()


async def test_a_caller_giving_up_cancels_neither_the_batch_nor_its_item(
    caplog: pytest.LogCaptureFixture,
) -> None:
    send = FakeSend()
    send.gate = asyncio.Event()
    b = batcher(send)
    patient = asyncio.gather(b.submit(1), b.submit(-1), return_exceptions=True)

    async def impatient() -> object:
        async with asyncio.timeout(0.01):
            return await b.submit(-2)

    with pytest.raises(TimeoutError):
        await impatient()
    assert len(send.batches) == 1 and set(send.batches[0]) == {1, -1, -2}  # sent with the others
    send.gate.set()
    one, minus_one = await patient
    assert one == 2 and isinstance(minus_one, NotFound)
    # the abandoned item's NotFound was never awaited: no "exception was never retrieved" log
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
    assert "never retrieved" not in caplog.text
    await b.aclose()


async def test_a_cancelled_caller_before_the_send_still_sends_its_item() -> None:
    send = FakeSend()
    b = batcher(send)
    task = asyncio.create_task(b.submit(7))
    await asyncio.sleep(0)  # submitted, the flusher not run yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await b.submit(8) == 16
    assert send.batches[0] == [7]
    await b.aclose()


async def test_aclose_fails_what_is_in_flight_and_refuses_new_items() -> None:
    send = FakeSend()
    send.gate = asyncio.Event()
    b = batcher(send)
    waiting = asyncio.gather(b.submit(1), return_exceptions=True)
    await send.in_flight.wait()
    queued = asyncio.gather(b.submit(2), return_exceptions=True)
    await asyncio.sleep(0)
    await b.aclose()
    [in_flight] = await waiting
    [not_sent] = await queued
    assert isinstance(in_flight, Unavailable) and isinstance(not_sent, Unavailable)
    assert send.batches == [[1]]
    with pytest.raises(RuntimeError, match="closed"):
        await b.submit(3)
    await b.aclose()  # idempotent


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(FakeSend(), max_batch=0, name="x")
