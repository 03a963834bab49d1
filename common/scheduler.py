"""Keyed scheduler: the one place retries live (docs/architecture.md, Reconciliation).

``KeyedScheduler`` runs ``handler(key)`` for keys that are due, with these rules:

- one pending entry per key; the earliest due time wins, a later time for a pending key is
  ignored (the reference system's dedup rule);
- a min-heap of ``(due, seq, key)`` entries with lazy deletion: a replaced or cancelled entry
  stays in the heap until it surfaces or the heap is compacted, which happens once stale
  entries outnumber live ones, so memory stays bounded by the number of pending keys;
- a key never runs twice at once: an enqueue while it runs marks it dirty and schedules exactly
  one more run after the current one ends (at the requested time, never before the run ends);
- a failing handler is logged with ``log_error`` and retried after
  ``min(0.1 s * 2**attempt, 10 s)`` (the project's formula, ``common/backoff.py``);
  a fresh ``enqueue`` (an event) resets the attempt count and, being earlier, replaces a
  pending backoff retry;
- a run that ends in ``CancelledError`` while the scheduler is not closing is a failure too
  (``RunCancelled``, retried the same way): only ``close()`` may drop work;
- at most ``workers`` handlers run at once;
- ``close()`` stops taking work, waits for running handlers (cancels them after a timeout).

Unlike the reference (one goroutine fed by a bounded channel, which could deadlock), ``enqueue``
is a plain synchronous O(log n) call on the loop: no channel, no lock, no task per enqueue. A
single timer armed through the ``Clock`` at the heap top drives dispatch; each run is a task
owned by the scheduler. Tests drive time with ``FakeClock``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Final, Protocol, Self

import attrs
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common.backoff import backoff_delay
from common.errors import InvalidInput, Unavailable, log_error

__all__ = [
    "FakeClock",
    "KeyedScheduler",
    "RunCancelled",
    "SchedulerClosed",
    "SchedulerStats",
]

logger = logging.getLogger(__name__)

DEFAULT_WORKERS: Final = 8
# Compact the heap once it holds this many more entries than twice the live ones; the slack
# keeps tiny heaps from being rebuilt on every replaced entry.
_COMPACT_SLACK: Final = 64
# After the close timeout, cancelled handlers get this long to unwind before close gives up.
_CANCEL_GRACE_S: Final = 1.0
# Loop iterations FakeClock.settle() lets pass.
_SETTLE_ROUNDS: Final = 20

# heap entry: (due, seq, key); seq is unique, so tuples never compare keys and ties keep
# insertion order. An entry is live iff it is the very object in ``_pending[key]``.
_Entry = tuple[float, int, str]


class SchedulerClosed(Unavailable):
    """``enqueue`` or ``start`` on a scheduler that is closing or closed (the service is draining)."""


class RunCancelled(Unavailable):
    """A handler run ended in ``CancelledError`` while the scheduler was not closing; it counts
    as a failure and is retried (logged at WARNING, as a dependency failure is)."""


# -- clocks -----------------------------------------------------------------------------------


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Time source and one-shot timers; ``asyncio`` loop time in production, fake in tests."""

    def now(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable: ...


class LoopClock:
    """The running loop's clock (``loop.time()`` / ``loop.call_at``), bound on first use.

    Bound once rather than looked up per call: ``now()`` is on the hot path of ``enqueue``.
    """

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def now(self) -> float:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.call_at(when, callback)


class _FakeTimer:
    __slots__ = ("callback", "is_cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.is_cancelled = False

    def cancel(self) -> None:
        self.is_cancelled = True


class FakeClock:
    """A clock that moves only when told to, so timing tests are deterministic.

    ``advance(dt)`` walks through the timers due within ``dt`` in time order: it sets ``now``
    to each timer's time, fires it and lets the loop run (``settle``) so the work it started,
    and any timers that work arms, happen at that instant. Timers due now or earlier go
    straight to ``loop.call_soon``.
    """

    def __init__(self) -> None:
        self._now = 0.0
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        if when <= self._now:
            return asyncio.get_running_loop().call_soon(callback)
        timer = _FakeTimer(when, callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    async def settle(self) -> None:
        """Let ready tasks and callbacks run for a fixed number of loop iterations."""
        for _ in range(_SETTLE_ROUNDS):
            await asyncio.sleep(0)

    async def advance(self, dt: float) -> None:
        if not dt >= 0:
            raise InvalidInput("a fake clock only moves forward", dt=dt)
        target = self._now + dt
        await self.settle()
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.is_cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
            await self.settle()
        self._now = max(self._now, target)
        await self.settle()


# -- metrics ----------------------------------------------------------------------------------

# Module-level metrics, labelled by scheduler name: two schedulers with one name (tests, a
# restarted runtime) share the children instead of registering duplicate timeseries.
_RUNS = Counter("rtc_scheduler_runs", "Handler runs completed (success or failure)", ["scheduler"])
_FAILURES = Counter("rtc_scheduler_failures", "Handler runs that raised", ["scheduler"])
_RETRIES = Counter("rtc_scheduler_retries", "Backoff retries scheduled after a failure", ["scheduler"])

_LIVE: weakref.WeakSet[KeyedScheduler] = weakref.WeakSet()


class _GaugeCollector(Collector):
    """Queue depth and running handlers, read at scrape time so ``enqueue`` pays nothing.

    No ``describe()``: the default registry learns the names from ``collect()`` (auto_describe).
    """

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("rtc_scheduler_queue_depth", "Pending keys", labels=["scheduler"])
        running = GaugeMetricFamily("rtc_scheduler_running", "Handlers running", labels=["scheduler"])
        totals: dict[str, list[int]] = {}
        for sched in list(_LIVE):
            acc = totals.setdefault(sched.name, [0, 0])
            acc[0] += len(sched)
            acc[1] += sched.running
        for name, (queued, busy) in sorted(totals.items()):
            depth.add_metric([name], queued)
            running.add_metric([name], busy)
        yield depth
        yield running


REGISTRY.register(_GaugeCollector())


@attrs.frozen(kw_only=True)
class SchedulerStats:
    queue_depth: int
    running: int
    runs: int
    failures: int
    retries: int
    heap_size: int


# -- the scheduler ----------------------------------------------------------------------------


class KeyedScheduler:
    """Run ``handler(key)`` per due key: deduplicated, never concurrent per key, retried with backoff.

    Use inside one event loop: ``enqueue`` / ``cancel`` / ``clear`` are synchronous and may be
    called from any coroutine or callback on that loop (also before ``start``; the keys wait).
    """

    def __init__(
        self,
        handler: Callable[[str], Awaitable[None]],
        *,
        workers: int = DEFAULT_WORKERS,
        clock: Clock | None = None,
        name: str = "scheduler",
    ) -> None:
        if workers < 1:
            raise InvalidInput("scheduler workers must be >= 1", workers=workers)
        self.name = name
        self.workers = workers
        self._handler = handler
        self._clock: Clock = clock if clock is not None else LoopClock()
        self._now = self._clock.now  # bound once: enqueue is the hot path
        self._heap: list[_Entry] = []
        self._pending: dict[str, _Entry] = {}  # live heap entry per key
        self._dirty: dict[str, float] = {}  # key running now -> due time of its one extra run
        self._attempts: dict[str, int] = {}  # consecutive failures since the last success/event
        self._tasks: dict[str, asyncio.Task[None]] = {}  # running handlers, owned here
        self._seq = itertools.count()
        self._timer: Cancellable | None = None
        self._timer_when = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._is_started = False
        self._is_closed = False
        self._closed: asyncio.Event | None = None
        self._runs = 0
        self._failures = 0
        self._retries = 0
        self._m_runs = _RUNS.labels(name)
        self._m_failures = _FAILURES.labels(name)
        self._m_retries = _RETRIES.labels(name)
        _LIVE.add(self)

    # -- queries ------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Pending keys: queued in the heap plus running keys with an extra run due."""
        return len(self._pending) + len(self._dirty)

    def __repr__(self) -> str:
        return f"<KeyedScheduler {self.name!r} pending={len(self)} running={len(self._tasks)}>"

    def pending(self, key: str) -> bool:
        return key in self._pending or key in self._dirty

    def attempts(self, key: str) -> int:
        """Consecutive failures of ``key`` since its last success or event."""
        return self._attempts.get(key, 0)

    def is_running(self, key: str) -> bool:
        return key in self._tasks

    @property
    def running(self) -> int:
        return len(self._tasks)

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    def next_delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt + 1``: 0 -> base, 1 -> 2 * base ... capped."""
        return backoff_delay(attempt)

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            queue_depth=len(self),
            running=len(self._tasks),
            runs=self._runs,
            failures=self._failures,
            retries=self._retries,
            heap_size=len(self._heap),
        )

    # -- commands -----------------------------------------------------------------------------

    def enqueue(self, key: str, delay_s: float = 0.0) -> None:
        """Ask for ``handler(key)`` in ``delay_s`` seconds; an earlier pending request wins.

        This is an event: it resets the key's attempt count, and a pending backoff retry that
        is later than the new time is replaced.
        """
        if self._is_closed:
            raise SchedulerClosed("scheduler is closed", scheduler=self.name, key=key)
        now = self._now()
        # "not > 0" also maps NaN and negative delays to now instead of poisoning the heap.
        due = now + delay_s if delay_s > 0 else now
        if self._attempts:
            self._attempts.pop(key, None)
        if key in self._tasks:
            # Running: never start a second run; remember one more, after this one ends.
            old = self._dirty.get(key)
            if old is None or due < old:
                self._dirty[key] = due
            return
        entry = self._pending.get(key)
        if entry is not None and entry[0] <= due:
            return
        self._push(key, due)

    def cancel(self, key: str) -> bool:
        """Drop the pending entry of ``key`` (a running handler finishes); True if there was one."""
        self._attempts.pop(key, None)
        found = self._pending.pop(key, None) is not None
        found = self._dirty.pop(key, None) is not None or found
        if found:
            self._maybe_compact()
        return found

    def clear(self) -> None:
        """Drop every pending entry; running handlers finish."""
        self._heap.clear()
        self._pending.clear()
        self._dirty.clear()
        self._attempts.clear()
        self._disarm()

    async def start(self) -> None:
        """Start dispatching (idempotent); keys enqueued before start become due now."""
        if self._is_closed:
            raise SchedulerClosed("scheduler is closed", scheduler=self.name)
        if self._is_started:
            return
        self._loop = asyncio.get_running_loop()
        self._is_started = True
        logger.debug("scheduler %s: new -> started (pending=%d)", self.name, len(self))
        self._pump()

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop taking work, drop pending keys, wait for running handlers; idempotent.

        Handlers still running after ``timeout_s`` are cancelled. If ``close`` itself is
        cancelled, the handlers are cancelled too (the scheduler owns them) and it re-raises.
        """
        if self._closed is not None:
            await self._closed.wait()
            return
        self._is_closed = True
        self._closed = asyncio.Event()
        _LIVE.discard(self)
        dropped = len(self)
        self.clear()
        tasks = list(self._tasks.values())
        logger.debug(
            "scheduler %s: started -> closing (running=%d, dropped=%d)", self.name, len(tasks), dropped
        )
        try:
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=timeout_s)
                if late:
                    logger.warning(
                        "scheduler %s: cancelling %d handlers still running after %ss",
                        self.name,
                        len(late),
                        timeout_s,
                    )
                    for task in late:
                        task.cancel()
                    _, stuck = await asyncio.wait(late, timeout=_CANCEL_GRACE_S)
                    if stuck:
                        logger.error("scheduler %s: %d handlers ignored cancellation", self.name, len(stuck))
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        finally:
            self._closed.set()
        logger.debug("scheduler %s: closing -> closed", self.name)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals ----------------------------------------------------------------------------

    def _push(self, key: str, due: float) -> None:
        entry = (due, next(self._seq), key)
        self._pending[key] = entry
        heap = self._heap
        heapq.heappush(heap, entry)
        # _maybe_compact inlined: this is the enqueue hot path.
        if len(heap) > 2 * len(self._pending) + _COMPACT_SLACK:
            self._compact()
        # Arm only when a worker is free: otherwise the run that ends pumps the heap itself.
        top = heap[0][0]
        if top < self._timer_when and self._is_started and len(self._tasks) < self.workers:
            self._arm(top)

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._pending) + _COMPACT_SLACK:
            self._compact()

    def _compact(self) -> None:
        # In place: callers may hold a reference to the list.
        self._heap[:] = self._pending.values()
        heapq.heapify(self._heap)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = when
        self._timer = self._clock.call_at(when, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_when = math.inf

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = math.inf
        self._pump()

    def _pump(self) -> None:
        """Start runs for due keys while workers are free, then arm the timer for the next one."""
        if not self._is_started or self._is_closed:
            return
        heap = self._heap
        pending = self._pending
        tasks = self._tasks
        loop = self._loop
        assert loop is not None
        now = self._now()
        while heap:
            entry = heap[0]
            due, _, key = entry
            if pending.get(key) is not entry:
                heapq.heappop(heap)  # replaced or cancelled
                continue
            if len(tasks) >= self.workers or due > now:
                break
            heapq.heappop(heap)
            del pending[key]
            tasks[key] = loop.create_task(self._run(key))
        if heap and len(tasks) < self.workers and heap[0][0] < self._timer_when:
            self._arm(heap[0][0])

    async def _run(self, key: str) -> None:
        error: Exception | None = None
        is_done = False
        try:
            await self._handler(key)
            is_done = True
        except Exception as exc:
            error = exc
            is_done = True
        except asyncio.CancelledError:
            if self._is_closed:
                raise  # close() cancelled it: shutdown, nothing to retry
            # Not our close: something inside the handler was cancelled (a request whose
            # connection dropped, a stray cancel()). The key's work is not done, and dropping it
            # would leave the resource wrong until the next event: count a failure and retry.
            error = RunCancelled("reconcile run was cancelled", key=key, scheduler=self.name)
            is_done = True
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this task itself was cancelled: let it end so, the retry is scheduled
        finally:
            # Other BaseExceptions pass through untouched: is_done stays False, so the run
            # counts as neither success nor failure and is not retried.
            self._finish(key, is_done, error)

    def _finish(self, key: str, is_done: bool, error: Exception | None) -> None:
        del self._tasks[key]
        due = self._dirty.pop(key, None)
        if is_done:
            self._runs += 1
            self._m_runs.inc()
        if error is None:
            if is_done:
                self._attempts.pop(key, None)
        else:
            self._failures += 1
            self._m_failures.inc()
            attempt = self._attempts.get(key, 0)
            if self._is_closed:
                log_error(logger, error, "reconcile failed", key=key, attempt=attempt, scheduler=self.name)
            else:
                delay_s = self.next_delay(attempt)
                retry_due = self._now() + delay_s
                log_error(
                    logger,
                    error,
                    "reconcile failed",
                    key=key,
                    attempt=attempt,
                    scheduler=self.name,
                    retry_in_s=delay_s,
                )
                # An event that arrived during the run and is due first wins; its enqueue has
                # already reset the attempt count, so its run is a fresh first attempt.
                if due is None or retry_due < due:
                    due = retry_due
                    self._attempts[key] = attempt + 1
                    self._retries += 1
                    self._m_retries.inc()
        if due is not None and not self._is_closed:
            self._push(key, due)
        self._pump()
