"""The heartbeat keeper: a module's key on an etcd lease, so the key dies with the module.

Mechanics as in the reference system: grant a lease of the TTL, put the value
with it, keep the lease alive at TTL/3; when the lease is lost (etcd says it is gone, or etcd
was unreachable for longer than the TTL) grant a new one and put again, with the project's
backoff (``common/backoff.py``: 100 ms doubling, cap 10 s) and +-50 % jitter until it works;
on stop revoke the lease under a 5 s timeout so the key disappears at once instead of a TTL
later. Unlike the old system the value can change: ``update()`` re-puts the current
``make_value()`` under the same lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

from common.backoff import Backoff
from common.errors import AppError, InvalidInput, log_error
from common.etcd import EtcdStore, LeaseLost
from common.supervisor import SupervisedTask

__all__ = ["HeartbeatKeeper"]

logger = logging.getLogger(__name__)

DEFAULT_TTL_S = 10.0
REVOKE_TIMEOUT_S = 5.0
# While etcd does not answer a refresh, try again this often (the lease may still be alive).
REFRESH_RETRY_S = 0.5

PutFn = Callable[[str, bytes, int], Awaitable[Any]]


class HeartbeatKeeper:
    """Keeps ``key`` = ``make_value()`` alive on a lease of ``ttl_s`` until stopped.

    ``put(key, value, lease_id)`` lets a caller route the write elsewhere (e.g. through the
    state store); by default it is ``store.put``. Use as ``async with`` or start()/stop().
    """

    def __init__(
        self,
        store: EtcdStore,
        key: str,
        make_value: Callable[[], bytes],
        *,
        ttl_s: float = DEFAULT_TTL_S,
        put: PutFn | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise InvalidInput("heartbeat TTL must be positive", key=key, ttl_s=ttl_s)
        self.store = store
        self.key = key
        self.make_value = make_value
        self.ttl_s = ttl_s
        self.refresh_interval_s = ttl_s / 3
        self._put: PutFn = put if put is not None else self._store_put
        self._lease_id: int | None = None
        self._is_alive = False
        # Serialises writes so the newest make_value() is the one etcd keeps.
        self._write_lock = asyncio.Lock()
        self._dirty = False
        self._task: SupervisedTask | None = None
        self._is_started = False
        self._is_stopped = False

    @property
    def lease_id(self) -> int | None:
        """The lease the key is on now (None before start and after stop)."""
        return self._lease_id

    @property
    def is_alive(self) -> bool:
        """True while the lease is held, the last write/refresh went through and the refresh
        loop runs (a loop that died refreshes nothing: the lease is about to go)."""
        return self._is_alive and self._task is not None and self._task.is_running

    async def _store_put(self, key: str, value: bytes, lease_id: int) -> Any:
        return await self.store.put(key, value, lease=lease_id)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Grant the lease and put the value (errors propagate), then keep it alive in a task."""
        if self._is_stopped:
            raise RuntimeError("HeartbeatKeeper is stopped; create a new one")
        if self._is_started:
            return
        await self._grant_and_put()
        self._is_started = True
        self._task = SupervisedTask(f"heartbeat {self.key}", self._run)
        self._task.start()
        logger.info("heartbeat %s started on lease %x (ttl %.1f s)", self.key, self._lease_id, self.ttl_s)

    async def stop(self) -> None:
        """Stop refreshing and revoke the lease so the key disappears now; idempotent."""
        if self._is_stopped:
            return
        self._is_stopped = True
        task, self._task = self._task, None
        if task is not None:
            await task.stop()
        lease_id, self._lease_id = self._lease_id, None
        self._is_alive = False
        if lease_id is None:
            return
        try:
            await self._revoke(lease_id)
        except (AppError, TimeoutError) as exc:
            # The key still goes, a TTL later, when the unrefreshed lease expires.
            log_error(logger, exc, "heartbeat revoke failed", key=self.key, lease=f"{lease_id:x}")
        else:
            logger.info("heartbeat %s stopped, lease %x revoked", self.key, lease_id)

    async def aclose(self) -> None:
        await self.stop()

    async def update(self) -> bool:
        """Put the current ``make_value()`` under the same lease now; True if it was written.

        On failure nothing is raised: the keeper writes the newest value as soon as it holds
        a live lease again (next refresh or re-grant).
        """
        if self._is_stopped or not self._is_started:
            return False
        self._dirty = True
        lease_id = self._lease_id
        if lease_id is None or not self._is_alive:
            return False
        try:
            await self._write(lease_id)
        except LeaseLost:
            self._is_alive = False
            logger.warning("heartbeat %s: lease %x lost during update", self.key, lease_id)
            return False
        except AppError as exc:
            log_error(logger, exc, "heartbeat update failed; will retry", key=self.key)
            return False
        return True

    async def _write(self, lease_id: int) -> None:
        async with self._write_lock:
            self._dirty = False
            try:
                await self._put(self.key, self.make_value(), lease_id)
            except BaseException:
                self._dirty = True
                raise

    async def _grant_and_put(self) -> None:
        lease_id = await self.store.grant(self.ttl_s)
        try:
            await self._write(lease_id)
        except BaseException:
            # Don't leave an orphan lease behind; it would expire anyway, a TTL later.
            with contextlib.suppress(AppError, TimeoutError):
                await self._revoke(lease_id)
            raise
        old, self._lease_id = self._lease_id, lease_id
        self._is_alive = True
        if old is not None and old != lease_id:
            # The old lease may have survived an etcd outage; the key now lives on the new one.
            with contextlib.suppress(AppError, TimeoutError):
                await self._revoke(old)

    async def _revoke(self, lease_id: int) -> None:
        async with asyncio.timeout(REVOKE_TIMEOUT_S):
            await self.store.revoke(lease_id)

    async def _run(self) -> None:
        last_ok = time.monotonic()
        delay = self.refresh_interval_s
        while True:
            await asyncio.sleep(delay)
            delay = self.refresh_interval_s
            lease_id = self._lease_id
            assert lease_id is not None
            if self._is_alive:
                try:
                    await self.store.refresh(lease_id)
                    last_ok = time.monotonic()
                    if self._dirty:
                        await self._write(lease_id)
                    continue
                except LeaseLost:
                    pass
                except Exception as exc:  # a bug in make_value must not end the heartbeat either
                    down_s = time.monotonic() - last_ok
                    if down_s <= self.ttl_s:
                        log_error(
                            logger, exc, "heartbeat refresh failed", key=self.key, down_s=round(down_s, 1)
                        )
                        delay = min(self.refresh_interval_s, REFRESH_RETRY_S)
                        continue
                logger.warning("heartbeat %s: lease %x lost -> regranting", self.key, lease_id)
                self._is_alive = False
            await self._regrant()
            last_ok = time.monotonic()

    async def _regrant(self) -> None:
        # Jitter: an etcd outage takes every module's lease at once; their regrants should not march in step.
        backoff = Backoff(jitter=0.5)
        while True:
            try:
                await self._grant_and_put()
            except Exception as exc:
                wait_s = backoff.next()
                log_error(
                    logger,
                    exc,
                    "heartbeat regrant failed",
                    key=self.key,
                    attempt=backoff.attempt,
                    retry_in_s=wait_s,
                )
                await asyncio.sleep(wait_s)
                continue
            tries = backoff.attempt + 1
            logger.info("heartbeat %s: regranted -> lease %x (attempt %d)", self.key, self._lease_id, tries)
            return
