"""The room manager's REST API (the reference system's paths, bodies and status codes; bugs fixed).

Handlers decode (``decode_body`` for bodies, ids validated by the service), make one service
call and encode. Errors are AppErrors mapped by ``common.http.exception_handlers`` to
``{"success": false, "error", "details"}``. Every write (create and stop rooms, set and
remove marks) and the module list need ``Authorization: Bearer <API token>`` (401 without one,
403 with a wrong one); reads of rooms and stats stay open. The live anchor counts of the stats
(``/api/rooms/{roomId}/stats``, ``totalParticipants`` of ``/api/stats``) are the connected users
in svc_users' Redis hashes (503 while Redis is down). OpenAPI is served at ``/schema``
(request bodies are documented from the body classes, since handlers take the raw body to
decode it strictly).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Litestar, Response, delete, get, post, put
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, Operation, SecurityScheme
from litestar.params import FromPath, QueryParameter, RawBody
from litestar.types import LifespanHook

from common.contracts import record_schema
from common.errors import Forbidden, InvalidInput, Unauthorized
from common.http import decode_body, health_response, make_app
from common.keys import Collection
from common.records import format_time
from common.usertoken import bearer_token
from common.wiring import metrics_payload
from svc_rooms import metrics
from svc_rooms.bodies import CreateRoomBody, MarkBody
from svc_rooms.modules import ModuleState
from svc_rooms.service import ModuleRef, RoomService, RoomView

__all__ = ["DEFAULT_PAGE_LIMIT", "MAX_PAGE_LIMIT", "HealthFn", "create_app"]

DEFAULT_PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000
_API_TOKEN: list[dict[str, list[str]]] = [{"apiToken": []}]

HealthFn = Callable[[], Awaitable[Mapping[str, bool]]]


def _json_body_operation(cls: type[Any]) -> type[Operation]:
    """An Operation class whose OpenAPI entry documents ``cls`` as the JSON request body."""
    schema = record_schema(cls, dialect=False)

    @dataclass
    class _BodyOperation(Operation):
        def to_schema(self) -> dict[str, Any]:
            out = super().to_schema()
            out["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
            return out

    _BodyOperation.__name__ = f"{cls.__name__}Operation"
    return _BodyOperation


def _module_type(value: str) -> Collection:
    if value not in (Collection.MIXERS, Collection.JANUSES):
        raise InvalidInput("moduleType must be mixers or januses", field="moduleType", value=value[:64])
    return Collection(value)


def _ref(ref: ModuleRef | None, *, with_port: bool = False) -> dict[str, Any] | None:
    if ref is None:
        return None
    out: dict[str, Any] = {"id": ref.id, "state": ref.state, "healthy": ref.is_healthy}
    if with_port:
        out["rtpPort"] = ref.rtp_port
    return out


def _room(view: RoomView, *, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "roomId": view.room_id,
        "hlsUrl": view.hls_url,
        "createdAt": format_time(view.created_at),
        "maxAnchors": view.max_anchors,
        "status": view.status,
    }
    if not full:
        return out
    out["generation"] = view.generation
    out["janus"] = _ref(view.janus)
    out["mixer"] = _ref(view.mixer, with_port=True)
    if view.mixer is not None and view.mixer.rtp_port:
        out["rtpPort"] = view.mixer.rtp_port
    if view.discard_at is not None:
        out["discardAt"] = format_time(view.discard_at)
    return out


def _module(state: ModuleState) -> dict[str, Any]:
    hb = state.heartbeat
    label = state.shown_label
    return {
        "type": state.collection.value,
        "id": state.id,
        "healthy": state.is_healthy,
        "pickable": state.is_pickable,
        "label": label.value if label is not None else None,
        "heartbeat": None
        if hb is None
        else {
            "status": hb.status.value,
            "host": hb.host,
            "capacity": hb.capacity,
            "streams": hb.streams,
            "startedAt": format_time(hb.started_at),
        },
        "load": {"assigned": state.assigned, "capacity": state.capacity},
    }


def create_app(
    service: RoomService,
    *,
    api_token: str,
    health: HealthFn,
    on_startup: list[LifespanHook] | None = None,
    debug: bool = False,
) -> Litestar:
    """The litestar app over ``service``; ``health`` returns named checks (all true = healthy)."""
    expected = api_token.encode()

    def api_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        token = bearer_token(connection.headers.get("authorization"))
        if token is None:
            raise Unauthorized("API token required (Authorization: Bearer <API token>)")
        if not hmac.compare_digest(token.encode(), expected):
            raise Forbidden("wrong API token")

    @post(
        "/api/rooms",
        summary="Create a room and start it live",
        guards=[api_guard],
        security=_API_TOKEN,
        operation_class=_json_body_operation(CreateRoomBody),
        status_code=201,
    )
    async def create_room(body: RawBody) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            req = decode_body(CreateRoomBody, body)
            view = await service.create_room(req.room_id, req.pin, req.max_anchors)
        finally:
            metrics.ROOM_CREATE_SECONDS.observe(time.perf_counter() - started)
        room = _room(view, full=False)
        room.update(
            pin=view.pin,
            janusId=view.janus.id if view.janus else None,
            mixerId=view.mixer.id if view.mixer else None,
        )
        return {"success": True, "room": room}

    @get("/api/rooms/{room_id:str}", summary="A room with its live status and modules")
    async def get_room(room_id: FromPath[str]) -> dict[str, Any]:
        return {"success": True, "room": _room(await service.get_room(room_id), full=True)}

    @get("/api/rooms", summary="Rooms sorted by id, paginated")
    async def list_rooms(
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_LIMIT)] = DEFAULT_PAGE_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
    ) -> dict[str, Any]:
        rooms, next_cursor = await service.list_rooms(limit=limit, cursor=cursor)
        return {
            "success": True,
            "count": len(rooms),
            "rooms": [_room(r, full=False) for r in rooms],
            "nextCursor": next_cursor,
        }

    @delete(
        "/api/rooms/{room_id:str}",
        summary="Stop a room (it is deleted once modules let go)",
        guards=[api_guard],
        security=_API_TOKEN,
        status_code=200,
    )
    async def delete_room(room_id: FromPath[str]) -> dict[str, Any]:
        await service.stop_room(room_id)
        return {"success": True, "message": f"Room {room_id} stopped"}

    @get("/api/rooms/{room_id:str}/stats", summary="A room's live anchor count")
    async def room_stats(room_id: FromPath[str]) -> dict[str, Any]:
        return {"success": True, "stats": await service.room_stats(room_id)}

    @get("/api/stats", summary="Room and module counts")
    async def stats() -> dict[str, Any]:
        return {"success": True, "stats": await service.stats()}

    @put(
        "/api/modules/{module_type:str}/{module_id:str}/mark",
        summary="Label a module (admin)",
        guards=[api_guard],
        security=_API_TOKEN,
        operation_class=_json_body_operation(MarkBody),
    )
    async def set_mark(module_type: FromPath[str], module_id: FromPath[str], body: RawBody) -> dict[str, Any]:
        collection = _module_type(module_type)
        req = decode_body(MarkBody, body)
        await service.set_mark(collection, module_id, req.label, req.ttl)
        return {
            "success": True,
            "message": "Module mark set successfully",
            "module": {"type": collection.value, "id": module_id, "label": req.label.value, "ttl": req.ttl},
        }

    @delete(
        "/api/modules/{module_type:str}/{module_id:str}/mark",
        summary="Remove a module's label (admin)",
        guards=[api_guard],
        security=_API_TOKEN,
        status_code=200,
    )
    async def delete_mark(module_type: FromPath[str], module_id: FromPath[str]) -> dict[str, Any]:
        collection = _module_type(module_type)
        await service.delete_mark(collection, module_id)
        return {
            "success": True,
            "message": "Module mark deleted successfully",
            "module": {"type": collection.value, "id": module_id},
        }

    @get(
        "/api/modules",
        summary="Every module: heartbeat, mark, load, pickable (admin)",
        guards=[api_guard],
        security=_API_TOKEN,
    )
    async def modules() -> dict[str, Any]:
        return {"success": True, "modules": [_module(m) for m in service.modules()]}

    @get("/health", summary="etcd and NATS reachable, state relay running")
    async def health_check() -> Response[Any]:
        return health_response(await health(), {"service": "rooms", "timestamp": int(time.time())})

    @get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response[bytes]:
        payload, content_type = metrics_payload()
        return Response(content=payload, media_type=content_type)

    return make_app(
        [
            create_room,
            get_room,
            list_rooms,
            delete_room,
            room_stats,
            stats,
            set_mark,
            delete_mark,
            modules,
            health_check,
            metrics_endpoint,
        ],
        openapi_config=OpenAPIConfig(
            title="audio-rtc room manager",
            version="1.0.0",
            path="/schema",
            components=Components(
                security_schemes={"apiToken": SecurityScheme(type="http", scheme="bearer")}
            ),
        ),
        on_startup=on_startup or [],
        debug=debug,
    )
