"""Fixtures for svc_rooms: the service in-process on real etcd and a private NATS, a fake clock,
an HTTP client, and helpers to simulate modules (fakes.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from common.bus import Bus
from common.etcd import EtcdStore
from common.keys import Keyspace
from common.state import StateStore
from svc_rooms.app import Rooms, running
from svc_rooms.config import Config
from tests.integration.svc_rooms.fakes import (
    API_TOKEN,
    AUTH,
    FakeClock,
    FakeModule,
    StartModule,
    rooms_env,
)
from tests.servers import LOOPBACK, EtcdServer, NatsServer, RedisServer


@pytest.fixture
def rooms_config(
    etcd_server: EtcdServer, nats_private: NatsServer, redis_server: RedisServer, keyspace: Keyspace
) -> Config:
    return Config.from_env(rooms_env(etcd_server, nats_private, keyspace, f"{LOOPBACK}:{redis_server.port}"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def rooms(rooms_config: Config, clock: FakeClock) -> AsyncIterator[Rooms]:
    async with running(rooms_config, clock=clock, run_housekeeping=False) as r:
        yield r


@pytest.fixture
async def client(rooms: Rooms) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=rooms.url, headers=AUTH, timeout=10.0) as c:
        yield c


@pytest.fixture
def states(etcd: EtcdStore, bus: Bus, keyspace: Keyspace) -> StateStore:
    return StateStore(etcd, bus, keyspace)


@pytest.fixture
async def modules(states: StateStore) -> AsyncIterator[StartModule]:
    """``await modules("mixers", "mx-1", capacity=10)`` starts a fake module, stopped at teardown."""
    async with AsyncExitStack() as stack:

        async def start(collection: str, module_id: str, **kwargs: Any) -> FakeModule:
            module = FakeModule(states, collection, module_id, **kwargs)
            return await stack.enter_async_context(module)

        yield start


__all__ = ["API_TOKEN", "AUTH", "FakeClock", "StartModule"]
