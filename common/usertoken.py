"""User tokens: the HS256 JWT svc_users issues and svc_gateway checks before the WebSocket upgrade.

Claims: ``sub`` (the user id), ``roomId``, ``role``, ``iat``, ``exp`` and ``aud: "rtc-gateway"``.
The signing secret is ``JWT_SECRET``, distinct from the viewer-token secret, and viewer tokens
carry ``aud: "hls"``, so neither kind of token passes as the other. Only HS256 is accepted
(``alg: none`` and every other algorithm are refused), with no leeway on ``exp``.

Every refusal is ``Unauthorized`` with a reason that names what was wrong; the caller decides
what to show (the gateway answers HTTP 401 before the upgrade).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
import jwt

from common.errors import Unauthorized
from common.ids import is_valid_id, is_valid_user_id
from common.records import MemberRole

__all__ = [
    "ROLE_ALIASES",
    "USER_AUDIENCE",
    "UserClaims",
    "bearer_token",
    "issue_user_token",
    "parse_role",
    "verify_user_token",
]

USER_AUDIENCE = "rtc-gateway"
ALGORITHM = "HS256"
# The reference's third role; a guest speaks like an anchor.
ROLE_ALIASES = {"guest": MemberRole.ANCHOR}


def parse_role(value: object) -> MemberRole | None:
    """``host``/``anchor`` (or the alias ``guest``) as a role; None for anything else."""
    if not isinstance(value, str):
        return None
    if value in ROLE_ALIASES:
        return ROLE_ALIASES[value]
    try:
        return MemberRole(value)
    except ValueError:
        return None


@attrs.frozen(kw_only=True)
class UserClaims:
    user_id: str
    room_id: str
    role: MemberRole
    issued_at: int
    expires_at: int


def issue_user_token(
    secret: str,
    *,
    user_id: str,
    room_id: str,
    role: MemberRole,
    ttl_s: float,
    clock: Callable[[], float] = time.time,
) -> tuple[str, UserClaims]:
    """A signed token and the claims in it."""
    now = int(clock())
    claims = UserClaims(
        user_id=user_id, room_id=room_id, role=role, issued_at=now, expires_at=now + int(ttl_s)
    )
    payload = {
        "sub": user_id,
        "roomId": room_id,
        "role": role.value,
        "aud": USER_AUDIENCE,
        "iat": claims.issued_at,
        "exp": claims.expires_at,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM), claims


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def verify_user_token(
    secret: str, token: str | None, *, clock: Callable[[], float] = time.time
) -> UserClaims:
    """The claims of a valid user token; ``Unauthorized`` naming the reason otherwise."""
    if not token:
        raise Unauthorized("user token required", reason="missing")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=USER_AUDIENCE,
            options={"require": ["exp", "iat", "aud", "sub"]},
            leeway=0,
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("user token expired", reason="expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise Unauthorized("user token is not for the gateway", reason="audience") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("invalid user token", reason=type(exc).__name__) from exc
    # pyjwt checks exp against its own clock; an injected clock (tests) is checked here too.
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or not isinstance(iat, int) or exp <= clock():
        raise Unauthorized("user token expired", reason="expired")
    user_id, room_id, role = claims.get("sub"), claims.get("roomId"), parse_role(claims.get("role"))
    if not is_valid_user_id(user_id) or not is_valid_id(room_id) or role is None:
        raise Unauthorized("invalid user token", reason="claims")
    assert isinstance(user_id, str) and isinstance(room_id, str)
    return UserClaims(user_id=user_id, room_id=room_id, role=role, issued_at=iat, expires_at=exp)
