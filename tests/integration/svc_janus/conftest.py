"""Fixtures for svc_janus tests: one real Janus for the session (private ones where a test
kills, stops or reconfigures it), and the env that points svc_janus at the test servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from common.bus import Bus
from common.etcd import EtcdStore
from common.keys import Keyspace
from common.state import StateStore
from svc_janus.config import Config
from svc_janus.janus_ws import JanusClient
from tests.integration.svc_janus.janus_helpers import manager_env, unique_id
from tests.servers import EtcdServer, NatsServer
from tests.servers_janus import JanusServer


@pytest.fixture(scope="session")
def janus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JanusServer]:
    server = JanusServer(tmp_path_factory.mktemp("janus"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
) -> Config:
    env = manager_env(
        janus_server,
        nats_url=nats_private.url,
        etcd_endpoint=etcd_server.endpoint,
        keyspace=keyspace,
        janus_id=janus_id,
    )
    return Config.from_env(env)
