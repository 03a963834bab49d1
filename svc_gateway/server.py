"""The gateway's listening socket: plain HTTP (/health, /metrics, refusals) and WebSockets on /ws.

Before the upgrade (``process_request``): ``/health`` and ``/metrics`` are answered as plain
HTTP, other paths get 404, and ``/ws`` runs the checks of svc_gateway.auth (403 origin, 401
token or kicked user, 503 Redis away), each refusal a JSON body ``{"error", "reason"}``.

After the upgrade: the user's connection lock (svc_gateway.lock). A live connection of the same
user elsewhere refuses this one with close code 4409 (after the upgrade, so a browser sees the
code and the reason: an HTTP 409 before it would reach the page only as a failed connection);
Redis away refuses it with 1013 (try again later). Then the connection runs
(svc_gateway.connection) until it closes; on the way out the lock is released and the Janus
session is kept for a resume.

Frames over 64 KiB close the connection with 1009 (websockets' ``max_size``); permessage-deflate
is off (signalling messages are small, and each compressor costs memory per connection).
"""

from __future__ import annotations

import http
import json
import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from common.errors import AppError, Unavailable, log_error
from common.usertoken import UserClaims
from common.wiring import health_body, metrics_payload
from svc_gateway.auth import Authenticator
from svc_gateway.connection import Connection
from svc_gateway.fanout import Registry
from svc_gateway.lock import ConnectionLocks, LockResult
from svc_gateway.methods import CLOSE_LOCKED, Anchor, Services
from svc_gateway.metrics import CONNECTIONS

__all__ = ["CLOSE_TRY_AGAIN", "MAX_FRAME_BYTES", "GatewayServer"]

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024
CLOSE_TRY_AGAIN = 1013
WS_PATH = "/ws"


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _respond(connection: ServerConnection, status: int, body: bytes, content_type: str) -> Response:
    response = connection.respond(http.HTTPStatus(status), "")
    response.body = body
    del response.headers["Content-Type"]
    del response.headers["Content-Length"]
    response.headers["Content-Type"] = content_type
    response.headers["Content-Length"] = str(len(body))
    return response


def _json(connection: ServerConnection, status: int, body: Mapping[str, Any]) -> Response:
    return _respond(connection, status, json.dumps(body).encode(), "application/json")


class GatewayServer:
    def __init__(
        self,
        *,
        addr: str,
        ping_interval_s: float,
        rate_per_s: float,
        rate_burst: int,
        authenticator: Authenticator,
        locks: ConnectionLocks,
        services: Services,
        registry: Registry,
        health: Callable[[], Awaitable[Mapping[str, bool]]],
    ) -> None:
        self._addr = addr
        self._ping_interval_s = ping_interval_s
        self._rate = (rate_per_s, rate_burst)
        self._auth = authenticator
        self._locks = locks
        self._services = services
        self._registry = registry
        self._health = health
        self._claims: weakref.WeakKeyDictionary[ServerConnection, UserClaims] = weakref.WeakKeyDictionary()
        self._server: Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def start(self) -> None:
        host, port = _split(self._addr)
        try:
            self._server = await serve(
                self._handle,
                host,
                port,
                process_request=self._process_request,
                max_size=MAX_FRAME_BYTES,
                ping_interval=self._ping_interval_s,
                ping_timeout=self._ping_interval_s,
                compression=None,
                close_timeout=3,
            )
        except OSError as exc:
            raise Unavailable(f"svc_gateway cannot listen on {self._addr}: {exc.strerror}") from exc
        logger.info("svc_gateway listening on ws://%s:%d%s", host, self.port, WS_PATH)

    async def aclose(self) -> None:
        """Stop accepting; close every connection with 1001 (going away) and wait for them."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close(close_connections=True)
        await server.wait_closed()

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path == "/health":
            status, body = health_body(await self._health(), {"service": "svc_gateway"})
            return _json(connection, status, body)
        if path == "/metrics":
            payload, content_type = metrics_payload()
            return _respond(connection, 200, payload, content_type)
        if path != WS_PATH:
            return _json(connection, 404, {"error": "not found", "reason": "path"})
        try:
            claims = await self._auth.authenticate(request.path, request.headers)
        except AppError as exc:
            log_error(logger, exc, "connection refused")
            return _json(
                connection, exc.status_code, {"error": exc.detail, "reason": exc.fields.get("reason")}
            )
        self._claims[connection] = claims
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        claims = self._claims.pop(connection, None)
        if claims is None:  # cannot happen: process_request let it through
            await connection.close(1011, "not authenticated")
            return
        conn_id = uuid.uuid4().hex
        try:
            held = await self._locks.acquire(claims.user_id, conn_id)
        except Unavailable as exc:
            log_error(logger, exc, "connection lock")
            await connection.close(CLOSE_TRY_AGAIN, "connection lock unavailable, try again later")
            return
        if held is LockResult.REFUSED:
            logger.info("user %s already connected: refusing %s", claims.user_id, conn_id)
            await connection.close(CLOSE_LOCKED, "this user already has a live connection")
            return
        if held is LockResult.TAKEN_OVER:
            logger.info("user %s: lock taken over from a gone gateway by %s", claims.user_id, conn_id)
        rate_per_s, burst = self._rate
        conn = Connection(connection, conn_id=conn_id, rate_per_s=rate_per_s, burst=burst)
        anchor = Anchor(conn, claims, self._services)
        conn.set_handler(anchor.handle)
        self._registry.add(anchor)
        CONNECTIONS.inc()
        logger.info("user %s of room %s connected (%s)", claims.user_id, claims.room_id, conn_id)
        try:
            await conn.run()
        finally:
            CONNECTIONS.dec()
            self._registry.remove(anchor)
            anchor.dispose()
            await self._locks.release(claims.user_id, conn_id)
            logger.info(
                "user %s of room %s disconnected (%s, close %s)",
                claims.user_id,
                claims.room_id,
                conn_id,
                connection.close_code,
            )
