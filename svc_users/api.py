"""svc_users HTTP handlers: viewer tokens and the HLS key endpoint (decode, one call, encode).

- ``POST /api/token`` ``{"roomId"}`` -> 200 ``{"token", "expiresIn"}``; 400 bad body, 404 room
  not on air.
- ``GET /hls/rooms/{roomId}/enc.key`` with ``Authorization: Bearer <token>`` -> 200, 16 bytes
  ``application/octet-stream`` with no-cache headers; 401 / 403 / 404 (see svc_users.viewer).
- ``GET /health`` (NATS connected, etcd reachable: 200, else 503), ``GET /metrics``.

CORS (every origin; GET/POST/OPTIONS; Authorization and Content-Type; Content-Length exposed)
lets a player on another origin fetch the key. Errors use the common JSON body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.config.cors import CORSConfig
from litestar.params import FromPath, RawBody

from common.http import decode_body, health_response, json_response, make_app
from common.wiring import metrics_payload
from svc_users.bodies import TokenBody
from svc_users.viewer import ViewerAccess

__all__ = ["KEY_HEADERS", "create_app"]

KEY_HEADERS = {
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Expires": "0",
}


def create_app(
    access: ViewerAccess,
    health: Callable[[], Awaitable[Mapping[str, bool]]],
    status: Callable[[], Mapping[str, Any]],
) -> Litestar:
    """``health()`` gives the named checks of ``/health`` (200 when all are true, else 503)."""

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
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["Content-Length"],
        allow_credentials=False,
    )
    return make_app([issue_token, enc_key, health_check, metrics], cors_config=cors)
