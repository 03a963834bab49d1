"""Real servers for the tests, started on demand on free loopback ports in temporary dirs.

Nothing here touches a running `just up` stack: ports come from the OS and state lives under
pytest's tmp dir. Tests that crash or restart a server start a private one from tests.servers.

Session-wide: ``nats_server``, ``etcd_server``, ``redis_server``. Per test: ``nats_private``
(a fresh NATS: state subjects carry no etcd prefix, so two tests sharing one NATS would see
each other's events; a nats-server starts in about 50 ms, which makes that isolation cheap),
``keyspace`` (a unique etcd root), ``etcd`` (a client of the session etcd) and ``bus`` (a
client of ``nats_private`` with the streams created).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from common.bus import Bus
from common.etcd import EtcdStore
from common.keys import Keyspace
from tests.servers import EtcdServer, NatsServer, RedisServer
from tests.stackutil import Stack

settings.register_profile("fast", max_examples=20, deadline=None)
settings.register_profile("ci", max_examples=100, deadline=None)
settings.load_profile("fast" if os.environ.get("FAST") == "1" else "ci")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if any(p in parts for p in ("integration", "contract", "e2e")):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


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


@pytest.fixture
def new_stack(tmp_path: Path) -> Iterator[Any]:
    """A factory of whole stacks (infra/stack.py) on free ports; all are cleaned up after the test."""
    made: list[Stack] = []

    def make(name: str = "run") -> Stack:
        s = Stack(tmp_path / name)
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.cleanup()
