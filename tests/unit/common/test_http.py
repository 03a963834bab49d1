"""The HTTP edge: every error class maps to its status and the documented body."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from litestar import Litestar, get, post
from litestar.params import RawBody
from litestar.testing import TestClient

from common import errors
from common.http import decode_body, exception_handlers, health_response


@attrs.frozen(kw_only=True)
class Body:
    room_id: str
    max_anchors: int = 3


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.InvalidInput("bad pin", field="pin"), 400),
        (errors.Unauthorized("no token"), 401),
        (errors.Forbidden("wrong token"), 403),
        (errors.NotFound("Room r1 not found"), 404),
        (errors.Conflict("Room r1 already exists"), 409),
        (errors.Unavailable("etcd down"), 503),
        (errors.DependencyTimeout("etcd slow"), 503),
    ],
)
def test_app_errors_map_to_status_and_body(exc: errors.AppError, status: int) -> None:
    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise exc

    with TestClient(Litestar([boom], exception_handlers=exception_handlers())) as client:
        r = client.get("/boom")
    assert r.status_code == status
    body = r.json()
    assert body["success"] is False and body["error"] == exc.detail and isinstance(body["details"], list)
    if "field" in exc.fields:
        assert body["details"] == [{"field": exc.fields["field"], "message": exc.detail}]


def test_bugs_are_a_generic_500_and_litestar_errors_keep_the_body() -> None:
    @get("/bug", sync_to_thread=False)
    def bug() -> None:
        raise RuntimeError("secret internals")

    @post("/items")
    async def items(body: RawBody) -> dict[str, object]:
        return attrs.asdict(decode_body(Body, body))

    with TestClient(Litestar([bug, items], exception_handlers=exception_handlers())) as client:
        r = client.get("/bug")
        assert r.status_code == 500 and r.json() == {
            "success": False,
            "error": "internal error",
            "details": [],
        }
        assert "secret" not in r.text
        r = client.get("/nowhere")
        assert r.status_code == 404 and r.json()["success"] is False
        r = client.post("/items", content=b'{"roomId": "r-1", "maxAnchors": 2}')
        assert r.status_code == 201 and r.json() == {"room_id": "r-1", "max_anchors": 2}
        for raw, word in [
            (b"", "empty"),
            (b"{nope", "JSON"),
            (b'{"roomId": "r-1", "extra": 1}', "extra"),
            (b'{"roomId": 5}', "roomId"),
        ]:
            r = client.post("/items", content=raw)
            assert r.status_code == 400, raw
            assert word in r.text, (raw, r.text)


def test_health_response_is_ok_only_when_every_check_is_true() -> None:
    @get("/health", sync_to_thread=False)
    def healthy() -> Any:
        return health_response({"nats": True, "etcd": True}, {"service": "x", "status": "ignored"})

    @get("/broken", sync_to_thread=False)
    def broken() -> Any:
        return health_response({"nats": False, "etcd": True}, {"service": "x"})

    with TestClient(Litestar([healthy, broken])) as client:
        ok = client.get("/health")
        assert ok.status_code == 200
        assert ok.json() == {"service": "x", "status": "ok", "checks": {"nats": True, "etcd": True}}
        bad = client.get("/broken")
        assert bad.status_code == 503
        body = bad.json()
        assert body == {"service": "x", "status": "unavailable", "checks": {"nats": False, "etcd": True}}
