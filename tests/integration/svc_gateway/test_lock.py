"""The connection locks on a real Redis: a burst of acquires is answered from one pipeline with
the right result for each caller, and a Redis that is away fails every caller with Unavailable."""

from __future__ import annotations

import asyncio
import uuid

from common.config import RedisSettings
from common.errors import Unavailable
from common.userkeys import UserKeys
from common.wiring import open_redis
from svc_gateway.lock import ConnectionLocks, LockResult, ServerHeartbeat
from tests.servers import LOOPBACK, RedisServer, free_port


async def test_a_burst_of_acquires_gets_each_callers_answer(redis_server: RedisServer, prefix: str) -> None:
    keys = UserKeys(prefix)
    settings = RedisSettings(addr=f"{LOOPBACK}:{redis_server.port}", max_connections=2)
    async with open_redis(settings) as redis:
        async with ServerHeartbeat(redis, keys, server_id="gw-a", ttl_s=5):
            locks = ConnectionLocks(redis, keys, server_id="gw-a", ttl_s=30)
            users = [str(uuid.uuid4()) for _ in range(600)]
            # more callers than pooled connections, all at once; each user twice: its first
            # connection holds the lock, the second (another conn id) is refused
            results = await asyncio.gather(
                *(locks.acquire(u, "conn-1") for u in users), *(locks.acquire(u, "conn-2") for u in users)
            )
            assert results == [LockResult.ACQUIRED] * 600 + [LockResult.REFUSED] * 600
            # a refresh of the holder keeps it
            assert await locks.acquire(users[0], "conn-1") is LockResult.ACQUIRED
            value = await redis.get(keys.conn_lock(users[0]))
            assert value == b"gw-a:conn-1"
            assert 29_000 < await redis.pttl(keys.conn_lock(users[0])) <= 30_000
        # the holder's gateway is gone (heartbeat deleted): another one takes over
        other = ConnectionLocks(redis, keys, server_id="gw-b", ttl_s=30)
        assert await other.acquire(users[1], "conn-9") is LockResult.TAKEN_OVER


async def test_redis_away_fails_every_caller() -> None:
    settings = RedisSettings(addr=f"{LOOPBACK}:{free_port()}")
    async with open_redis(settings) as redis:
        locks = ConnectionLocks(redis, UserKeys("t"), server_id="gw", ttl_s=30)
        results = await asyncio.gather(
            *(locks.acquire(str(uuid.uuid4()), "c") for _ in range(5)), return_exceptions=True
        )
    assert all(isinstance(r, Unavailable) for r in results), results
