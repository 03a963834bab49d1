"""Fixtures for svc_rooms: the service in-process on real etcd and a private NATS, a fake clock,
an HTTP client, and helpers to simulate modules (fakes.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from common.bus import Bus
from common.etcd import EtcdStore
from common.keys import Keyspace
from common.state import StateStore
from svc_rooms.app import Rooms, running
from svc_rooms.config import Config
from tests.integration.svc_rooms.fakes import FakeModule
from tests.servers import EtcdServer, NatsServer, free_port

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class FakeClock:
    """A settable UTC clock for housekeeping rules."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def rooms_env(etcd_server: EtcdServer, nats_server: NatsServer, keyspace: Keyspace) -> dict[str, str]:
    root = keyspace.rooms[: -len("rooms/")]
    return {
        "ETCD_ENDPOINTS": etcd_server.endpoint,
        "NATS_SERVERS": nats_server.url,
        "ETCD_PREFIX_ROOMS": keyspace.rooms,
        "ETCD_PREFIX_JANUSES": keyspace.januses,
        "ETCD_PREFIX_MIXERS": keyspace.mixers,
        "ETCD_PREFIX_SLOTS": f"{root}slots/",
        "HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "HLS_ADV_URL": "http://127.0.0.1:8080/hls/",
    }


@pytest.fixture
def rooms_config(etcd_server: EtcdServer, nats_private: NatsServer, keyspace: Keyspace) -> Config:
    return Config.from_env(rooms_env(etcd_server, nats_private, keyspace))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def rooms(rooms_config: Config, clock: FakeClock) -> AsyncIterator[Rooms]:
    async with running(rooms_config, clock=clock, run_housekeeping=False) as r:
        yield r


@pytest.fixture
async def client(rooms: Rooms) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=rooms.url, timeout=10.0) as c:
        yield c


@pytest.fixture
def states(etcd: EtcdStore, bus: Bus, keyspace: Keyspace) -> StateStore:
    return StateStore(etcd, bus, keyspace)


StartModule = Callable[..., Awaitable[FakeModule]]


@pytest.fixture
async def modules(states: StateStore) -> AsyncIterator[StartModule]:
    """``await modules("mixers", "mx-1", capacity=10)`` starts a fake module, stopped at teardown."""
    async with AsyncExitStack() as stack:

        async def start(collection: str, module_id: str, **kwargs: Any) -> FakeModule:
            module = FakeModule(states, collection, module_id, **kwargs)
            return await stack.enter_async_context(module)

        yield start
