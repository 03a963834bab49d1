"""Simulated Janus and mixer modules for svc_rooms tests: heartbeats on real etcd leases.

A ``FakeModule`` writes ``/<collection>/<id>/heartbeat`` through the state store (so the put is
published) on a lease it keeps alive itself; ``crash()`` stops the keep-alive without revoking,
so the key disappears by lease expiry exactly as when a real module dies (the state relay then
publishes the delete).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import httpx

from common import records
from common.bus import Bus
from common.etcd import EtcdStore
from common.keys import Collection, Keyspace, StateKey
from common.state import StateStore
from svc_rooms.app import Rooms, running
from svc_rooms.config import Config
from tests.servers import EtcdServer, NatsServer, free_port

__all__ = [
    "API_TOKEN",
    "AUTH",
    "FakeClock",
    "FakeModule",
    "Harness",
    "StartModule",
    "rooms_env",
    "rooms_harness",
]


class FakeClock:
    """A settable UTC clock for housekeeping rules."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


StartModule = Callable[..., Awaitable["FakeModule"]]

API_TOKEN = "test-api-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def rooms_env(
    etcd_server: EtcdServer, nats_server: NatsServer, keyspace: Keyspace, redis_addr: str | None = None
) -> dict[str, str]:
    """svc_rooms's environment for a test: the test servers, the keyspace, a free port (and a
    Redis with a prefix of this keyspace, for the live anchor counts)."""
    root = keyspace.rooms[: -len("rooms/")]
    redis = {} if redis_addr is None else {"REDIS_ADDR": redis_addr, "REDIS_USER_SVC_PREFIX": root.strip("/")}
    return {
        **redis,
        "ETCD_ENDPOINTS": etcd_server.endpoint,
        "NATS_SERVERS": nats_server.url,
        "ETCD_PREFIX_ROOMS": keyspace.rooms,
        "ETCD_PREFIX_JANUSES": keyspace.januses,
        "ETCD_PREFIX_MIXERS": keyspace.mixers,
        "ETCD_PREFIX_SLOTS": f"{root}slots/",
        "ETCD_PREFIX_OUTBOX": f"{root}outbox/",
        "HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "API_TOKEN": API_TOKEN,
        "HLS_ADV_URL": "http://127.0.0.1:8080/hls/",
    }


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


@attrs.define
class Harness:
    """A running svc_rooms with its own NATS, a unique etcd keyspace, a client and fake modules."""

    rooms: Rooms
    client: httpx.AsyncClient
    bus: Bus
    states: StateStore
    stack: contextlib.AsyncExitStack

    async def module(self, collection: str, module_id: str, **kwargs: Any) -> FakeModule:
        return await self.stack.enter_async_context(FakeModule(self.states, collection, module_id, **kwargs))

    async def seen(self, collection: str, count: int) -> None:
        """Wait until ``count`` modules of ``collection`` are pickable in the service's cache."""
        deadline = asyncio.get_running_loop().time() + 5
        while len(self.rooms.service.resources.candidates(Collection(collection))) != count:
            assert asyncio.get_running_loop().time() < deadline, f"{count} {collection} not seen"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def rooms_harness(run_dir: Path, etcd_server: EtcdServer, **env: str) -> AsyncIterator[Harness]:
    """For tests outside tests/integration (contract tests), which do not see its fixtures;
    ``env`` overrides settings (e.g. ``MODULE_GRACE_PERIOD``)."""
    nats_server = NatsServer(run_dir / "nats-rooms")
    nats_server.start()
    keyspace = Keyspace.under(f"/t-{uuid.uuid4().hex[:12]}/")
    try:
        async with contextlib.AsyncExitStack() as stack:
            etcd = await stack.enter_async_context(EtcdStore.open([etcd_server.endpoint]))
            bus = await stack.enter_async_context(Bus.open([nats_server.url], name="test"))
            config = Config.from_env({**rooms_env(etcd_server, nats_server, keyspace), **env})
            rooms = await stack.enter_async_context(running(config, run_housekeeping=False))
            client = await stack.enter_async_context(
                httpx.AsyncClient(base_url=rooms.url, headers=AUTH, timeout=10.0)
            )
            modules = await stack.enter_async_context(contextlib.AsyncExitStack())
            yield Harness(
                rooms=rooms, client=client, bus=bus, states=StateStore(etcd, bus, keyspace), stack=modules
            )
    finally:
        nats_server.stop()
