"""Background tasks that do not die quietly: restarted with backoff, visible to ``/health``.

A service's long-running loops (the reconcile runtime's consumer, heartbeats, the state relay,
the Janus restart monitor, the mixer's output watchdog, expiry passes, housekeeping) each catch
the failures they expect and carry on. What they do not expect (a bug, a library raising
something new, a ``CancelledError`` leaking out of a dropped request) used to end the task
silently, and the service kept answering as if all were well. A :class:`SupervisedTask` runs
such a loop and, when it ends for any reason other than :meth:`SupervisedTask.stop`,

- logs it once (``log_error``: a bug with its traceback),
- reports it: ``is_running`` is False until the loop runs again (``/health`` names the task),
- starts the loop again after ``common/backoff``'s delay (100 ms doubling, cap 10 s), reset once
  a run has lasted longer than the cap (it had made progress).

A loop that *returns* is restarted too: these loops are meant to run until stopped.
:class:`Supervisor` is a named group of them with one ``checks()`` for ``/health`` and one
``aclose()``. Retries of single operations stay in the keyed scheduler; this restarts loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Self

from common.backoff import DEFAULT_MAX_DELAY_S, Backoff
from common.errors import AppError, log_error

__all__ = ["SupervisedTask", "Supervisor", "TaskDied"]

logger = logging.getLogger(__name__)

RunFn = Callable[[], Coroutine[Any, Any, None]]
SleepFn = Callable[[float], Awaitable[None]]

# stop(): how long a cancelled loop gets before it is cancelled again
_RECANCEL_S = 1.0


class TaskDied(AppError):
    """A supervised loop returned or was cancelled from inside; it is restarted (logged at ERROR,
    AppError's level: either is a bug in the loop)."""


class SupervisedTask:
    """Runs ``run()`` in a task until :meth:`stop`, restarting it whenever it ends; see the module doc.

    ``sleep`` and ``clock`` are for tests (a fake sleep that records delays, a fake clock).
    """

    def __init__(
        self,
        name: str,
        run: RunFn,
        *,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
        sleep: SleepFn = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._run = run
        self._backoff = Backoff(max_s=max_delay_s, jitter=0.0)
        self._sleep = sleep
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._is_running = False
        self.is_stopping = False  # set by stop() (or the group's aclose()): no restart from now
        self.restarts = 0  # times the loop was started again after it ended
        self.failures = 0  # times it ended unexpectedly

    @property
    def is_running(self) -> bool:
        """The loop is running now (False before start, while waiting to restart, after stop)."""
        return self._is_running and self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop in a task (idempotent); a stopped task cannot start again."""
        if self.is_stopping:
            raise RuntimeError(f"supervised task {self.name} was stopped; create a new one")
        if self._task is None:
            self._is_running = True  # from now: a health probe right after start must not fail
            self._task = asyncio.create_task(self._supervise(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait for it; idempotent. Nothing is restarted after this."""
        self.is_stopping = True
        task, self._task = self._task, None
        self._is_running = False
        if task is None:
            return
        # Cancel again while it runs: on Python 3.11 asyncio.wait_for can swallow a cancel that
        # meets its inner result, and a loop that lost its cancel would hold stop() forever.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=_RECANCEL_S)
        with contextlib.suppress(asyncio.CancelledError):
            task.result()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _supervise(self) -> None:
        while True:
            self._is_running = True
            started = self._clock()
            error: BaseException
            try:
                await self._run()
                if self.is_stopping:
                    return  # it saw its owner's stop flag before the cancel arrived
                error = TaskDied("background task returned", task=self.name)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self.is_stopping or (task is not None and task.cancelling()):
                    raise  # stopped by its owner (or the loop is shutting down)
                # Cancelled from inside (a dropped request's future, a stray cancel()): the
                # loop's work is not done.
                error = TaskDied("background task was cancelled from inside", task=self.name)
            except Exception as exc:
                error = exc
            self._is_running = False
            self.failures += 1
            if self._clock() - started > self._backoff.max_s:
                self._backoff.reset()  # it ran a while: a fresh failure, not a crash loop
            delay_s = self._backoff.next()
            log_error(
                logger, error, "background task died; restarting it", task=self.name, retry_in_s=delay_s
            )
            await self._sleep(delay_s)
            self.restarts += 1
            logger.info("background task %s: dead -> running (restart %d)", self.name, self.restarts)


class Supervisor:
    """A named group of supervised loops: one ``checks()`` for ``/health``, one ``aclose()``."""

    def __init__(
        self, *, sleep: SleepFn = asyncio.sleep, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._sleep = sleep
        self._clock = clock
        self._tasks: dict[str, SupervisedTask] = {}

    def spawn(self, name: str, run: RunFn, *, max_delay_s: float = DEFAULT_MAX_DELAY_S) -> SupervisedTask:
        """Start ``run`` under supervision as ``name`` (unique within the group)."""
        if name in self._tasks:
            raise RuntimeError(f"a supervised task named {name} exists already")
        task = SupervisedTask(name, run, max_delay_s=max_delay_s, sleep=self._sleep, clock=self._clock)
        self._tasks[name] = task
        task.start()
        return task

    def checks(self) -> dict[str, bool]:
        """name -> the loop is running now."""
        return {name: task.is_running for name, task in self._tasks.items()}

    @property
    def is_running(self) -> bool:
        return all(task.is_running for task in self._tasks.values())

    def __getitem__(self, name: str) -> SupervisedTask:
        return self._tasks[name]

    async def aclose(self) -> None:
        """Stop every loop, newest first (the reverse of their start)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            # All at once, before any await: a loop that ends on its owner's flag while another
            # is being stopped must not count as died.
            task.is_stopping = True
        for task in reversed(tasks):
            await task.stop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
