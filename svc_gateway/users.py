"""The gateway's side of the user state: status reports to svc_users, and the Redis reads it needs.

svc_users owns the user hashes; the gateway only reads a user's stored mute flag (``mu:{uid}``,
applied when the user's offer joins the AudioBridge room) and increments the user's connection
generation (``g:{uid}``) at each join. Every status change goes to svc_users as a core-NATS
request on ``rtc.users.status`` (``UserStatusReport``); svc_users ignores a report older than
the newest generation, so a stale connection cannot overwrite a newer one.

A failed report is logged and not retried: the next keepalive (every 15 s from the client)
reports again, and a status that is never refreshed expires to ``left`` in svc_users.
"""

from __future__ import annotations

import asyncio
import json
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from common import keys, records
from common.bus import Bus
from common.errors import AppError, Unavailable
from common.userkeys import UserKeys

__all__ = ["StatusReporter", "UserState"]

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 2.0


class StatusReporter:
    def __init__(self, bus: Bus, *, timeout_s: float) -> None:
        self._bus = bus
        self._timeout_s = timeout_s

    async def report(self, report: records.UserStatusReport) -> bool:
        """Send one report; False (logged) when svc_users did not take it."""
        try:
            reply = await self._bus.request(
                keys.USERS_STATUS_SUBJECT, records.encode_record(report), timeout_s=self._timeout_s
            )
            answer = json.loads(reply) if reply else None
            if not isinstance(answer, dict) or answer.get("ok") is not True:
                # svc_users answers refusals (unknown user 404, Redis down 503) as {"ok": false, ...}
                raise Unavailable(f"svc_users refused the report: {reply[:200]!r}")
        except (AppError, ValueError) as exc:
            logger.warning(
                "status %s of user %s (room %s, gen %d) not reported: %s",
                report.status,
                report.user_id,
                report.room_id,
                report.gen,
                exc,
            )
            return False
        return True


class UserState:
    def __init__(self, redis: Redis, user_keys: UserKeys) -> None:
        self._redis = redis
        self._keys = user_keys

    async def next_generation(self, user_id: str) -> int:
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                return int(await self._redis.incr(self._keys.generation(user_id)))
        except (RedisError, TimeoutError) as exc:
            raise Unavailable(f"Redis: cannot count the connection generation: {exc}") from exc

    async def is_muted(self, room_id: str, user_id: str) -> bool:
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                value = await self._redis.hget(
                    self._keys.room_users(room_id), self._keys.muted_field(user_id)
                )
        except (RedisError, TimeoutError) as exc:
            raise Unavailable(f"Redis: cannot read the mute flag: {exc}") from exc
        return value in (b"1", "1")
