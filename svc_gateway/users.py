"""The gateway's side of the user state: status reports to svc_users, and the Redis reads it needs.

svc_users owns the user hashes; the gateway only reads a user's stored mute flag (``mu:{uid}``,
applied when the user's offer joins the AudioBridge room) and increments the user's connection
generation (``g:{uid}``) at each join. Every status change goes to svc_users as a core-NATS
request on ``rtc.users.status``, batched with the others of that moment (``UserStatusReports``,
one result per report); svc_users ignores a report older than the newest generation, so a stale
connection cannot overwrite a newer one.

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
from common.batch import Batcher
from common.bus import Bus
from common.errors import AppError, Unavailable
from common.userkeys import UserKeys
from common.wiring import REDIS_TIMEOUT_S

__all__ = ["StatusReporter", "UserState"]

logger = logging.getLogger(__name__)


class StatusReporter:
    """Sends the reports of one moment to svc_users in one request (common/batch.py): at
    thousands of keepalives a second, one request per report cost the gateway and svc_users
    more than the rest of a keepalive. Every report still reaches svc_users, in order, and
    gets its own answer."""

    def __init__(self, bus: Bus, *, timeout_s: float) -> None:
        self._bus = bus
        self._timeout_s = timeout_s
        self._batcher: Batcher[records.UserStatusReport, None] = Batcher(
            self._send, max_batch=records.USER_STATUS_REPORTS_MAX, name="gateway-status"
        )

    async def report(self, report: records.UserStatusReport) -> bool:
        """Send one report (batched); False (logged) when svc_users did not take it."""
        try:
            # a little over the request's own timeout: a batch waiting behind the one in flight
            # still gets its answer instead of this caller giving up first
            async with asyncio.timeout(2 * self._timeout_s):
                await self._batcher.submit(report)
        except (AppError, TimeoutError) as exc:
            logger.warning(
                "status %s of user %s (room %s, gen %d) not reported: %s",
                report.status,
                report.user_id,
                report.room_id,
                report.gen,
                exc if str(exc) else type(exc).__name__,
            )
            return False
        return True

    async def _send(self, batch: list[records.UserStatusReport]) -> list[Exception | None]:
        """One request for the batch; per report None (taken) or the refusal svc_users gave."""
        payload = records.encode_record(records.UserStatusReports(reports=batch))
        reply = await self._bus.request(keys.USERS_STATUS_SUBJECT, payload, timeout_s=self._timeout_s)
        try:
            answer = json.loads(reply)
        except ValueError as exc:
            raise Unavailable(f"svc_users gave an unreadable reply: {reply[:200]!r}") from exc
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            # a whole request refused (bad payload 400, Redis down 503): {"ok": false, ...}
            raise Unavailable(f"svc_users refused the reports: {reply[:200]!r}")
        results = answer.get("results")
        if not isinstance(results, list) or len(results) != len(batch):
            raise Unavailable(f"svc_users gave no result per report: {reply[:200]!r}")
        return [_refusal(result) for result in results]

    async def aclose(self) -> None:
        """Stop batching; a report still waiting fails (logged, False)."""
        await self._batcher.aclose()


def _refusal(result: object) -> Unavailable | None:
    if isinstance(result, dict) and isinstance(result.get("changed"), bool):
        return None
    if isinstance(result, dict) and "error" in result:
        # a report refused on its own (unknown user 404): the others of the batch were taken
        return Unavailable(f"svc_users refused the report: {result['error']}", code=result.get("code"))
    return Unavailable(f"svc_users gave an unreadable result: {str(result)[:200]}")


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
