"""Fixtures of the gateway tests: a Redis client and key prefix, the env of a gateway, svc_users'
stand-in, the fake Janus pool, and for the real-Janus tests an aiortc offer and an AudioBridge room."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from common.bus import Bus
from common.errors import NotFound
from common.keys import Keyspace
from svc_janus.audiobridge import SAMPLING_RATE_HZ, AudioBridge
from svc_janus.janus_ws import JanusClient
from tests.integration.svc_gateway.gw_helpers import (
    PIN,
    SECRET,
    FakePool,
    UsersStandIn,
    gateway_env,
    new_prefix,
)
from tests.integration.svc_gateway.test_janus_pool import aiortc_offer
from tests.integration.svc_janus.janus_helpers import random_free_room
from tests.servers import LOOPBACK, EtcdServer, NatsServer, RedisServer
from tests.servers_janus import JanusServer


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis(host=LOOPBACK, port=redis_server.port)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix() -> str:
    return new_prefix()


@pytest.fixture
def env(
    nats_private: NatsServer,
    etcd_server: EtcdServer,
    redis_server: RedisServer,
    keyspace: Keyspace,
    prefix: str,
) -> Callable[..., dict[str, str]]:
    def make(**extra: Any) -> dict[str, str]:
        return gateway_env(
            nats=nats_private, etcd=etcd_server, redis=redis_server, keyspace=keyspace, prefix=prefix, **extra
        )

    return make


@pytest.fixture
async def users(bus: Bus) -> AsyncIterator[UsersStandIn]:
    async with UsersStandIn(bus) as stand_in:
        yield stand_in


@pytest.fixture
def pool() -> FakePool:
    return FakePool()


@pytest.fixture(scope="module")
def offer() -> dict[str, str]:
    return asyncio.run(aiortc_offer())


@pytest.fixture
async def janus_room(janus_client: JanusClient, janus_server: JanusServer) -> AsyncIterator[int]:
    bridge = AudioBridge(janus_client, admin_key=janus_server.admin_key)
    number = await random_free_room(bridge)
    await janus_client.message(
        {
            "request": "create",
            "room": number,
            "admin_key": janus_server.admin_key,
            "description": "gateway-test",
            "secret": SECRET,
            "pin": PIN,
            "sampling_rate": SAMPLING_RATE_HZ,
            "permanent": False,
            "audiolevel_event": True,
        }
    )
    yield number
    with contextlib.suppress(NotFound):
        await janus_client.message({"request": "destroy", "room": number, "secret": SECRET})
