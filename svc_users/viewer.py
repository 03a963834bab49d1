"""Viewer access to a room's HLS stream: short-lived viewer tokens and the AES-128 key.

- ``issue_token(roomId)``: only for a room whose livemeta is ``onair`` (the reference issued
  tokens for any id, existing or not), a JWT (HS256) with ``roomId``, a random ``sub``,
  ``aud: "hls"``, ``iat`` and ``exp`` (``VIEWER_TOKEN_TTL``; the reference's never expired).
- ``hls_key(roomId, authorization)``: the room's 16-byte key (``common.hlskey``, the same
  derivation the mixer encrypts with) for ``Authorization: Bearer <viewer token of that
  room>``. No cache (the reference's LRU, keyed by room only, kept serving a stopped room's
  or an old nonce's key): each request reads the livemeta, so a restarted room's new key is
  served at once.

Errors: no or non-Bearer header -> ``Unauthorized``; a bad signature, wrong audience or
algorithm, an expired token or a token of another room -> ``Forbidden``; a room that is not on
air -> ``NotFound`` (checked after the token, so the endpoint tells nothing to a caller without
a valid token). This module imports no web framework and no etcd client.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Awaitable, Callable

import attrs
import jwt

from common import records
from common.errors import Forbidden, NotFound, Unauthorized
from common.hlskey import derive_hls_key
from common.ids import validate_room_id
from common.usertoken import bearer_token

__all__ = ["VIEWER_AUDIENCE", "IssuedToken", "ViewerAccess"]

VIEWER_AUDIENCE = "hls"
ALGORITHM = "HS256"

LiveMetaFn = Callable[[str], Awaitable[records.LiveMeta | None]]


@attrs.frozen
class IssuedToken:
    token: str
    expires_in_s: int


class ViewerAccess:
    """Viewer tokens and HLS keys; ``livemeta(roomId)`` reads the room's current livemeta."""

    def __init__(
        self,
        *,
        token_secret: str,
        hls_key_secret: str,
        token_ttl_s: float,
        livemeta: LiveMetaFn,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._token_secret = token_secret
        self._hls_key_secret = hls_key_secret
        self._ttl_s = int(token_ttl_s)
        self._livemeta = livemeta
        self._clock = clock

    async def _onair(self, room_id: str) -> records.LiveMeta:
        meta = await self._livemeta(room_id)
        if meta is None or meta.status is not records.LiveStatus.ONAIR:
            raise NotFound("room is not on air", room_id=room_id)
        return meta

    async def issue_token(self, room_id: str) -> IssuedToken:
        validate_room_id(room_id)
        await self._onair(room_id)
        now = int(self._clock())
        claims = {
            "sub": str(uuid.uuid4()),
            "roomId": room_id,
            "aud": VIEWER_AUDIENCE,
            "iat": now,
            "exp": now + self._ttl_s,
        }
        return IssuedToken(jwt.encode(claims, self._token_secret, algorithm=ALGORITHM), self._ttl_s)

    def check_token(self, room_id: str, authorization: str | None) -> None:
        """Raise unless ``authorization`` is ``Bearer <valid viewer token of room_id>``."""
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized("Authorization: Bearer <viewer token> required")
        try:
            claims = jwt.decode(
                token,
                self._token_secret,
                algorithms=[ALGORITHM],
                audience=VIEWER_AUDIENCE,
                options={"require": ["exp", "aud", "roomId"]},
                leeway=0,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Forbidden("viewer token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise Forbidden("invalid viewer token", reason=type(exc).__name__) from exc
        token_room = claims.get("roomId")
        if not isinstance(token_room, str) or not hmac.compare_digest(token_room.encode(), room_id.encode()):
            raise Forbidden("viewer token is for another room")

    async def hls_key(self, room_id: str, authorization: str | None) -> bytes:
        validate_room_id(room_id)
        self.check_token(room_id, authorization)
        meta = await self._onair(room_id)
        return derive_hls_key(self._hls_key_secret, room_id, meta.nonce)
