"""One connection per user: the Redis connection lock and this process's heartbeat.

- ``{p}:c:{userId}`` = ``"{serverId}:{connId}"`` with a TTL (``CONN_LOCK_TTL``, 30 s), set when a
  connection opens and refreshed by its ``keepalive``; released (only if it still holds our
  value) when the connection ends.
- ``{p}:s:{serverId}`` = ``"1"`` with a short TTL (``SERVER_HEARTBEAT_TTL``, 3 s), refreshed
  every second while the process lives and deleted on a graceful stop.

A lock held by another connection is taken over only when the *holder's* gateway process is
gone, i.e. its heartbeat key has expired: the reference checked the caller's own heartbeat, so
a crashed gateway's users stayed locked out until the lock's (8 h, by a unit bug) TTL ran out.
A holder whose process lives keeps its lock: the second connection is refused.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from common.batch import Batcher
from common.errors import Unavailable
from common.supervisor import SupervisedTask
from common.userkeys import UserKeys
from common.wiring import REDIS_TIMEOUT_S

__all__ = ["ConnectionLocks", "LockResult", "ServerHeartbeat"]

logger = logging.getLogger(__name__)

HEARTBEAT_PERIOD_S = 1.0
# lock refreshes per pipeline: bounded so one round trip stays short
MAX_BATCH = 512

# KEYS[1] lock; ARGV: our value, ttl ms, the heartbeat key prefix ("{p}:s:").
# The holder's heartbeat key is derived from the value it stored ("serverId:connId"), inside the
# script, so reading the holder and checking its process is one atomic step.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
local holder = string.match(current, '^([^:]+):')
if holder == nil or redis.call('EXISTS', ARGV[3] .. holder) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LockResult(enum.IntEnum):
    REFUSED = 0
    ACQUIRED = 1
    TAKEN_OVER = 2


class ConnectionLocks:
    """The users' connection locks. Every ``acquire`` (a connect, or a keepalive's refresh) goes
    to Redis in a pipeline with the others waiting at that moment (common/batch.py): one round
    trip and one pooled connection for a burst of thousands of keepalives, instead of one each,
    which made the lock the largest cost of a keepalive and emptied the connection pool under
    load."""

    def __init__(self, redis: Redis, keys: UserKeys, *, server_id: str, ttl_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self.server_id = server_id
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._acquire: Any = redis.register_script(_ACQUIRE)
        self._release: Any = redis.register_script(_RELEASE)
        self._batcher: Batcher[tuple[str, str], int] = Batcher(
            self._acquire_many, max_batch=MAX_BATCH, name="gateway-lock"
        )

    def value(self, conn_id: str) -> str:
        return f"{self.server_id}:{conn_id}"

    async def acquire(self, user_id: str, conn_id: str) -> LockResult:
        """Take (or refresh) the user's lock for this connection; REFUSED if a live one holds it."""
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                result = await self._batcher.submit((user_id, conn_id))
        except TimeoutError as exc:
            raise Unavailable("Redis: connection lock timed out", user_id=user_id) from exc
        except RedisError as exc:
            raise Unavailable(f"Redis: connection lock failed: {exc}", user_id=user_id) from exc
        return LockResult(result)

    async def _acquire_many(self, batch: list[tuple[str, str]]) -> list[int]:
        heartbeat_prefix = self._keys.server_heartbeat("")
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for user_id, conn_id in batch:
                        await self._acquire(
                            keys=[self._keys.conn_lock(user_id)],
                            args=[self.value(conn_id), self._ttl_ms, heartbeat_prefix],
                            client=pipe,
                        )
                    results = await pipe.execute()
        except (TimeoutError, OSError) as exc:
            # one error type for the callers: a batch timing out here is Redis being slow, not
            # the caller's own deadline
            raise RedisError(str(exc) or type(exc).__name__) from exc
        return [int(result) for result in results]

    async def aclose(self) -> None:
        """Stop batching; an acquire still waiting fails with ``Unavailable``."""
        await self._batcher.aclose()

    async def release(self, user_id: str, conn_id: str) -> bool:
        """Delete the lock if it is still this connection's; never raises (a stale lock expires)."""
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                result = await self._release(keys=[self._keys.conn_lock(user_id)], args=[self.value(conn_id)])
        except (RedisError, TimeoutError) as exc:
            logger.warning("connection lock of %s not released (%s); it expires", user_id, exc)
            return False
        return bool(result)


class ServerHeartbeat:
    """``{p}:s:{serverId}``: set now, refreshed every second by a task, deleted by ``aclose``."""

    def __init__(self, redis: Redis, keys: UserKeys, *, server_id: str, ttl_s: float) -> None:
        self._redis = redis
        self._key = keys.server_heartbeat(server_id)
        self._ttl_ms = max(1, int(ttl_s * 1000))
        # Supervised: the loop handles Redis errors, but anything else used to end it, and then
        # every connection of this gateway would look orphaned once the key expired.
        self._task = SupervisedTask("gateway-heartbeat", self._run)

    @property
    def is_running(self) -> bool:
        """The refresh loop runs (the ``heartbeat`` health check)."""
        return self._task.is_running

    async def _beat(self) -> None:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            await self._redis.set(self._key, "1", px=self._ttl_ms)

    async def start(self) -> None:
        try:
            await self._beat()
        except (RedisError, TimeoutError) as exc:
            raise Unavailable(f"Redis: cannot write the gateway heartbeat: {exc}") from exc
        self._task.start()

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(HEARTBEAT_PERIOD_S)
            try:
                await self._beat()
            except (RedisError, TimeoutError) as exc:
                if not failing:
                    logger.warning("gateway heartbeat %s: ok -> failing (%s)", self._key, exc)
                failing = True
                continue
            if failing:
                logger.info("gateway heartbeat %s: failing -> ok", self._key)
                failing = False

    async def aclose(self) -> None:
        await self._task.stop()
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                await self._redis.delete(self._key)
        except (RedisError, TimeoutError) as exc:
            logger.warning("gateway heartbeat %s not deleted (%s); it expires", self._key, exc)

    async def __aenter__(self) -> ServerHeartbeat:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
