"""Who may open a gateway WebSocket: the checks made before the upgrade.

In order (each refusal is an HTTP answer with a JSON body ``{"error", "reason"}``, and the
socket is never upgraded):

1. ``Origin``: when the allowed list is not ``*``, a request carrying an ``Origin`` header not in
   the list gets **403**. A request without ``Origin`` passes: browsers always send one, so the
   check stops other sites' pages (cross-site WebSocket hijacking), while native clients
   (aiortc, tests, app servers) need none.
2. The user token, from ``?token=`` or else ``Authorization: Bearer``: missing, expired, forged,
   wrong audience, ``alg: none``... get **401** with the reason ``common.usertoken`` names.
3. The user must still exist in its room: the ``m:{userId}`` role field of the room's user hash
   (``common.userkeys``). Kick and room deletion remove it, so a kicked user's token, or a
   token for a room that no longer exists, gets **401** (reason ``kicked``). Redis unreachable:
   **503** (nobody is let in unchecked).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError

from common.errors import Forbidden, Unauthorized, Unavailable
from common.userkeys import UserKeys
from common.usertoken import UserClaims, bearer_token, verify_user_token
from common.wiring import REDIS_TIMEOUT_S

__all__ = ["Authenticator", "token_of"]


def token_of(path: str, headers: Mapping[str, str]) -> str | None:
    """``?token=`` first (browsers cannot set headers on a WebSocket), else the Bearer header."""
    query = parse_qs(urlsplit(path).query)
    for value in query.get("token", []):
        if value:
            return value
    return bearer_token(headers.get("Authorization"))


class Authenticator:
    def __init__(self, *, secret: str, allowed_origins: Sequence[str], redis: Redis, keys: UserKeys) -> None:
        self._secret = secret
        self._any_origin = "*" in allowed_origins
        self._origins = frozenset(o.rstrip("/") for o in allowed_origins)
        self._redis = redis
        self._keys = keys

    def check_origin(self, origin: str | None) -> None:
        if self._any_origin or origin is None or origin.rstrip("/") in self._origins:
            return
        raise Forbidden("origin not allowed", reason="origin", origin=origin)

    async def authenticate(self, path: str, headers: Mapping[str, str]) -> UserClaims:
        """The claims of a caller allowed to connect; Forbidden, Unauthorized or Unavailable."""
        self.check_origin(headers.get("Origin"))
        claims = verify_user_token(self._secret, token_of(path, headers))
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                role = await self._redis.hget(
                    self._keys.room_users(claims.room_id), self._keys.role_field(claims.user_id)
                )
        except (RedisError, TimeoutError) as exc:
            raise Unavailable(f"Redis: cannot check the user: {exc}", reason="redis") from exc
        if role is None:
            raise Unauthorized("user no longer exists in the room", reason="kicked")
        return claims
