"""svc_users HTTP handlers: room users, viewer tokens, the HLS key (decode, one call, encode).

- ``POST /api/rooms/{roomId}/users`` ``{role, pin?, displayName?}`` -> 200 ``{userID, token,
  expiresIn}``; ``GET /api/rooms/{roomId}/users`` -> ``{roomId, members}``;
  ``DELETE /api/rooms/{roomId}/users/{userId}`` -> ``{}``;
  ``POST /api/rooms/{roomId}/users/{userId}/mute`` ``{muted}`` -> ``{delivered}``. Who may call
  them and the errors: svc_users.users and docs/svc_users.md.

- ``POST /api/token`` ``{"roomId"}`` -> 200 ``{"token", "expiresIn"}``; 400 bad body, 404 room
  not on air.
- ``GET /hls/rooms/{roomId}/enc.key`` with ``Authorization: Bearer <token>`` -> 200, 16 bytes
  ``application/octet-stream`` with no-cache headers; 401 / 403 / 404 (see svc_users.viewer).
- ``GET /health`` (NATS connected, etcd reachable: 200, else 503), ``GET /metrics``.

CORS (every origin; GET/POST/DELETE/OPTIONS; Authorization and Content-Type; Content-Length
exposed) lets a player or an anchor page on another origin use them: no cookies are involved
(``allow_credentials`` off), every call carries its token. Errors use the common JSON body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from litestar import Litestar, Request, Response, delete, get, post
from litestar.config.cors import CORSConfig
from litestar.params import FromPath, RawBody

from common.http import decode_body, health_response, json_response, make_app
from common.records import unstructure
from common.wiring import metrics_payload
from svc_users.bodies import CreateUserBody, MuteBody, TokenBody
from svc_users.users import UserService
from svc_users.viewer import ViewerAccess

__all__ = ["KEY_HEADERS", "create_app"]

KEY_HEADERS = {
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Expires": "0",
}


def create_app(
    access: ViewerAccess,
    users: UserService,
    health: Callable[[], Awaitable[Mapping[str, bool]]],
    status: Callable[[], Mapping[str, Any]],
) -> Litestar:
    """``health()`` gives the named checks of ``/health`` (200 when all are true, else 503)."""

    @post("/api/rooms/{room_id:str}/users", status_code=200, summary="Create a room user and its token")
    async def create_user(
        room_id: FromPath[str], body: RawBody, request: Request[Any, Any, Any]
    ) -> Response[Any]:
        req = decode_body(CreateUserBody, body)
        created = await users.create_user(
            room_id,
            role=req.role,
            pin=req.pin,
            display_name=req.display_name or "",
            authorization=request.headers.get("authorization"),
        )
        return json_response(
            {"userID": created.user_id, "token": created.token, "expiresIn": created.expires_in_s},
            headers=KEY_HEADERS,
        )

    @get("/api/rooms/{room_id:str}/users", summary="The room's members")
    async def list_users(room_id: FromPath[str], request: Request[Any, Any, Any]) -> Response[Any]:
        members = await users.members(room_id, request.headers.get("authorization"))
        return json_response({"roomId": room_id, "members": [unstructure(m) for m in members]})

    @delete("/api/rooms/{room_id:str}/users/{user_id:str}", status_code=200, summary="Kick a user")
    async def kick_user(
        room_id: FromPath[str], user_id: FromPath[str], request: Request[Any, Any, Any]
    ) -> Response[Any]:
        await users.kick(room_id, user_id, request.headers.get("authorization"))
        return json_response({})

    @post("/api/rooms/{room_id:str}/users/{user_id:str}/mute", status_code=200, summary="Mute a user")
    async def mute_user(
        room_id: FromPath[str], user_id: FromPath[str], body: RawBody, request: Request[Any, Any, Any]
    ) -> Response[Any]:
        req = decode_body(MuteBody, body)
        delivered = await users.mute(room_id, user_id, req.muted, request.headers.get("authorization"))
        return json_response({"delivered": delivered})

    @post("/api/token", status_code=200, summary="Issue a viewer token for an on-air room")
    async def issue_token(body: RawBody) -> Response[Any]:
        req = decode_body(TokenBody, body)
        issued = await access.issue_token(req.room_id)
        return json_response({"token": issued.token, "expiresIn": issued.expires_in_s}, headers=KEY_HEADERS)

    @get("/hls/rooms/{room_id:str}/enc.key", summary="The room's AES-128 HLS key (viewer token)")
    async def enc_key(room_id: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        key = await access.hls_key(room_id, request.headers.get("authorization"))
        return Response(content=key, media_type="application/octet-stream", headers=KEY_HEADERS)

    @get("/health")
    async def health_check() -> Response[Any]:
        return health_response(await health(), status())

    @get("/metrics", sync_to_thread=False)
    def metrics() -> Response[bytes]:
        body, content_type = metrics_payload()
        return Response(content=body, media_type=content_type)

    cors = CORSConfig(
        allow_origins=["*"],
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["Content-Length"],
        allow_credentials=False,
    )
    return make_app(
        [create_user, list_users, kick_user, mute_user, issue_token, enc_key, health_check, metrics],
        cors_config=cors,
    )
