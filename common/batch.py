"""A micro-batcher: callers submit one item each and await its own result, while the items of
one moment go to the dependency together, in one call of ``send``.

- Items submitted in the same loop iteration, or while a batch is in flight, go out together in
  the next ``send`` (at most ``max_batch`` per call); one batch is in flight at a time, so a
  burst costs one round trip per ``max_batch`` items instead of one each, and the dependency
  sees the items in submission order.
- ``send(items)`` returns one result per item, in order; an ``Exception`` instance in that list
  fails only its item. An exception raised by ``send`` fails every item of that batch.
- A caller bounds its own wait (``async with asyncio.timeout(...)``): it awaits a shielded
  future, so its cancellation never cancels the batch the others wait on. Its item is still
  sent (it may already be on the wire), its result dropped.
- ``send`` bounds its own network calls: the batcher only runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from common.errors import Unavailable

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A caller that gave up no longer awaits its future: reading the exception here keeps
    # asyncio from logging "exception was never retrieved" for it (a caller still waiting gets
    # it raised anyway).
    if not future.cancelled():
        future.exception()


class Batcher(Generic[T, R]):
    """``await batcher.submit(item)`` -> that item's result from ``send``; ``aclose()`` stops it."""

    def __init__(
        self, send: Callable[[list[T]], Awaitable[Sequence[R | Exception]]], *, max_batch: int, name: str
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch}")
        self._send = send
        self.max_batch = max_batch
        self.name = name
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.is_closed = False

    async def submit(self, item: T) -> R:
        if self.is_closed:
            raise RuntimeError(f"batcher {self.name} is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=f"batch-{self.name}")
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the callers of this loop iteration join the batch
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                results = await self._send([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except asyncio.CancelledError:
                # aclose: the batch was cut short; its callers learn it, then the task ends
                for _, future in batch:
                    if not future.done():
                        future.set_exception(Unavailable(f"{self.name}: closed while sending"))
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def aclose(self) -> None:
        """Stop sending; the items not answered yet fail with ``Unavailable``. Idempotent."""
        self.is_closed = True
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        pending, self._pending = self._pending, []
        for _, future in pending:
            if not future.done():
                future.set_exception(Unavailable(f"{self.name}: closed"))

    async def __aenter__(self) -> Batcher[T, R]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
