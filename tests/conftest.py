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
from typing import Any, TypeVar

import pytest
from hypothesis import settings

from common.bus import Bus
from common.etcd import EtcdStore
from common.keys import Keyspace
from common.state import StateStore
from svc_janus.config import Config as JanusManagerConfig
from svc_janus.janus_ws import JanusClient
from tests.integration.svc_janus.janus_helpers import manager_env, unique_id
from tests.servers import EtcdServer, NatsServer, RedisServer, ServerProcess
from tests.servers_janus import JanusServer
from tests.stackutil import Stack

ServerT = TypeVar("ServerT", bound=ServerProcess)

settings.register_profile("fast", max_examples=20, deadline=None)
settings.register_profile("ci", max_examples=100, deadline=None)
settings.load_profile("fast" if os.environ.get("FAST") == "1" else "ci")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if any(p in parts for p in ("integration", "contract", "e2e")):
            item.add_marker(pytest.mark.integration)


def _running(server: ServerT) -> Iterator[ServerT]:
    """Start a server for a fixture and stop it (by pid) whatever the test did."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    yield from _running(NatsServer(tmp_path_factory.mktemp("nats")))


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    yield from _running(EtcdServer(tmp_path_factory.mktemp("etcd")))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from _running(RedisServer(tmp_path_factory.mktemp("redis")))


@pytest.fixture
def nats_private(tmp_path: Path) -> Iterator[NatsServer]:
    yield from _running(NatsServer(tmp_path / "nats-private"))


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

    def make(name: str = "run", **env: str) -> Stack:
        s = Stack(tmp_path / name, env)
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.cleanup()


# -- Janus (svc_janus tests and contract tests) ------------------------------------------


@pytest.fixture(scope="session")
def janus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JanusServer]:
    yield from _running(JanusServer(tmp_path_factory.mktemp("janus")))


@pytest.fixture
def janus_id() -> str:
    # Unique per test: the room secrets derive from it, so managers of different tests sharing
    # the session Janus cannot touch each other's rooms.
    return unique_id("janus")


@pytest.fixture
async def store(etcd: EtcdStore, bus: Bus, keyspace: Keyspace) -> StateStore:
    return StateStore(etcd, bus, keyspace)


@pytest.fixture
async def janus_client(janus_server: JanusServer) -> AsyncIterator[JanusClient]:
    """A client of the test's own (for inspection and plain-RTP participants)."""
    async with JanusClient(janus_server.ws_url, request_timeout_s=5) as c:
        await c.wait_connected(10)
        yield c


@pytest.fixture
def manager_config(
    janus_server: JanusServer,
    etcd_server: EtcdServer,
    nats_private: NatsServer,
    keyspace: Keyspace,
    janus_id: str,
) -> JanusManagerConfig:
    env = manager_env(
        janus_server,
        nats_url=nats_private.url,
        etcd_endpoint=etcd_server.endpoint,
        keyspace=keyspace,
        janus_id=janus_id,
    )
    return JanusManagerConfig.from_env(env)
