"""Fixtures for event-core tests: a private NATS per test, a unique etcd keyspace per test.

State subjects carry no etcd prefix, so two tests sharing one NATS would see each other's
events; a private nats-server starts in about 50 ms, which makes that isolation cheap.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from common.bus import Bus
from common.etcd import EtcdStore
from common.keys import Keyspace
from tests.servers import EtcdServer, NatsServer


@pytest.fixture
def nats_private(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats-private")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def keyspace() -> Keyspace:
    return Keyspace.under(f"/t-{uuid.uuid4().hex[:12]}/")


@pytest.fixture
async def etcd(etcd_server: EtcdServer) -> AsyncIterator[EtcdStore]:
    async with EtcdStore.open([etcd_server.endpoint]) as store:
        yield store


@pytest.fixture
async def bus(nats_private: NatsServer) -> AsyncIterator[Bus]:
    async with Bus.open([nats_private.url], name="test") as b:
        yield b
