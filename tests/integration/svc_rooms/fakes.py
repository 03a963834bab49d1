"""Simulated Janus and mixer modules for svc_rooms tests: heartbeats on real etcd leases.

A ``FakeModule`` writes ``/<collection>/<id>/heartbeat`` through the state store (so the put is
published) on a lease it keeps alive itself; ``crash()`` stops the keep-alive without revoking,
so the key disappears by lease expiry exactly as when a real module dies (the state relay then
publishes the delete).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from common import records
from common.keys import StateKey
from common.state import StateStore

__all__ = ["FakeModule"]


class FakeModule:
    def __init__(
        self,
        states: StateStore,
        collection: str,
        module_id: str,
        *,
        capacity: int = 10,
        ttl_s: float = 2.0,
        status: records.ModuleStatus = records.ModuleStatus.HEALTHY,
    ) -> None:
        self.states = states
        self.skey = StateKey(collection, module_id, "heartbeat")
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.status = status
        self.lease = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.skey.id

    def record(self) -> records.Heartbeat:
        return records.Heartbeat(
            status=self.status,
            host="127.0.0.1",
            capacity=self.capacity,
            streams=0,
            started_at=datetime.now(UTC),
        )

    async def start(self) -> FakeModule:
        self.lease = await self.states.etcd.grant(self.ttl_s)
        await self.states.put(self.skey, self.record(), lease=self.lease)
        self._task = asyncio.create_task(self._keepalive(), name=f"fake-{self.skey.id}")
        return self

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 4)
            with contextlib.suppress(Exception):
                await self.states.etcd.refresh(self.lease)

    async def _stop_keepalive(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def crash(self) -> None:
        """Stop renewing the lease: the heartbeat vanishes within ``ttl_s``."""
        await self._stop_keepalive()

    async def stop(self) -> None:
        """Graceful stop: revoke the lease (the heartbeat goes at once)."""
        await self._stop_keepalive()
        with contextlib.suppress(Exception):
            await self.states.etcd.revoke(self.lease)

    async def __aenter__(self) -> FakeModule:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
