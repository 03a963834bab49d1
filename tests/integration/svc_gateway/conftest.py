"""Fixtures of the gateway tests: a Redis client and key prefix, the env of a gateway, svc_users'
stand-in, and the fake Janus pool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from common.bus import Bus
from common.keys import Keyspace
from tests.integration.svc_gateway.gw_helpers import FakePool, UsersStandIn, gateway_env, new_prefix
from tests.servers import LOOPBACK, EtcdServer, NatsServer, RedisServer


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
