"""The room API end to end: every endpoint's success and error paths, exact status and body."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from common.etcd import EtcdStore
from common.keys import Keyspace, StateKey
from common.records import LiveMeta, LiveStatus, Mark, MarkLabel
from common.state import StateStore
from common.userkeys import UserKeys
from svc_rooms.app import Rooms
from tests.integration.eventcore import eventually
from tests.integration.svc_rooms.fakes import API_TOKEN, AUTH, FakeClock, StartModule
from tests.servers import LOOPBACK


@pytest.fixture
async def live(rooms: Rooms, modules: StartModule) -> Rooms:
    """The service with one Janus and one mixer of capacity 10, both in its cache."""
    await modules("januses", "janus-1", capacity=10)
    await modules("mixers", "mixer-1", capacity=10)
    await eventually(lambda: len(rooms.service.resources.candidates("mixers")) == 1, 5, "mixer seen")
    await eventually(lambda: len(rooms.service.resources.candidates("januses")) == 1, 5, "janus seen")
    return rooms


def _error(r: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and isinstance(body["details"], list)
    if error is not None:
        assert body["error"] == error
    return body


async def test_create_with_generated_ids_starts_the_room_live(
    live: Rooms, client: httpx.AsyncClient, states: StateStore
) -> None:
    r = await client.post("/api/rooms", content=b"{}")
    assert r.status_code == 201, r.text
    body = r.json()
    room = body["room"]
    assert body["success"] is True
    assert re.fullmatch(r"[0-9a-f]{20}", room["roomId"])
    assert re.fullmatch(r"[0-9a-f]{6}", room["pin"])
    assert room["maxAnchors"] == 3 and room["status"] == "onair"
    assert room["hlsUrl"] == f"http://127.0.0.1:8080/hls/{room['roomId']}/stream.m3u8"
    assert (room["janusId"], room["mixerId"]) == ("janus-1", "mixer-1")
    got = await states.get(StateKey("rooms", room["roomId"], "livemeta"))
    assert got is not None
    livemeta: LiveMeta = got.record
    assert livemeta.status is LiveStatus.ONAIR and re.fullmatch(r"[0-9a-f]{20}", livemeta.nonce)
    assert (livemeta.janus_id, livemeta.mixer_id, livemeta.generation) == ("janus-1", "mixer-1", 0)
    slots = await live.store.read_slots("mixers", "mixer-1")
    assert [s.room_id for s in slots.values()] == [room["roomId"]]


async def test_create_with_given_fields_then_409(live: Rooms, client: httpx.AsyncClient) -> None:
    r = await client.post("/api/rooms", json={"roomId": "room_A-1", "pin": "Ab12C3", "maxAnchors": 5})
    assert r.status_code == 201
    assert r.json()["room"]["pin"] == "Ab12C3" and r.json()["room"]["maxAnchors"] == 5
    r = await client.post("/api/rooms", json={"roomId": "room_A-1"})
    _error(r, 409, "Room room_A-1 already exists")


@pytest.mark.parametrize(
    ("body", "word"),
    [
        (b"", "empty"),
        (b"{nope", "JSON"),
        (b"[]", "object"),
        (b'{"roomId": "ab"}', "roomId"),
        (b'{"roomId": "' + b"a" * 33 + b'"}', "roomId"),
        (b'{"roomId": "a.b.c"}', "roomId"),
        (b'{"roomId": "a b c"}', "roomId"),
        (b'{"roomId": "a/b/c"}', "roomId"),
        (b'{"roomId": 123}', "roomId"),
        (b'{"pin": "12345"}', "pin"),
        (b'{"pin": "1234567"}', "pin"),
        (b'{"pin": "12345!"}', "pin"),
        (b'{"maxAnchors": 0}', "maxAnchors"),
        (b'{"maxAnchors": 6}', "maxAnchors"),
        (b'{"maxAnchors": "3"}', "maxAnchors"),
        (b'{"maxAnchors": 2.5}', "maxAnchors"),
        (b'{"roomid": "abc"}', "roomid"),
        (b'{"extra": 1}', "extra"),
    ],
)
async def test_create_validation(live: Rooms, client: httpx.AsyncClient, body: bytes, word: str) -> None:
    r = await client.post("/api/rooms", content=body)
    err = _error(r, 400)
    assert word in r.text, err
    assert (await live.store.read_all()) == {}


async def test_create_without_modules_is_503_and_leaves_nothing(
    rooms: Rooms, client: httpx.AsyncClient, modules: StartModule
) -> None:
    r = await client.post("/api/rooms", json={"roomId": "lonely"})
    _error(r, 503, "no available mixer")
    await modules("mixers", "mixer-1", capacity=1)
    await eventually(lambda: rooms.service.resources.candidates("mixers"), 5, "mixer seen")
    r = await client.post("/api/rooms", json={"roomId": "lonely"})
    _error(r, 503, "no available Janus server")
    assert (await rooms.store.read_all()) == {}
    assert (await rooms.store.read_all_slots()) == []


async def test_get_room(live: Rooms, client: httpx.AsyncClient) -> None:
    await client.post("/api/rooms", json={"roomId": "room-get", "pin": "123456"})
    r = await client.get("/api/rooms/room-get")
    assert r.status_code == 200
    room = r.json()["room"]
    assert "pin" not in room
    assert room["status"] == "onair" and room["generation"] == 0
    assert room["janus"] == {"id": "janus-1", "state": None, "healthy": True}
    assert room["mixer"] == {"id": "mixer-1", "state": None, "healthy": True, "rtpPort": None}
    _error(await client.get("/api/rooms/nope-missing"), 404, "Room nope-missing not found")
    body = _error(await client.get("/api/rooms/a.b"), 400)
    assert body["details"][0]["field"] == "roomId"


async def test_list_is_sorted_and_paginated(live: Rooms, client: httpx.AsyncClient) -> None:
    for room_id in ["r-c", "r-a", "r-b", "r-b-2"]:
        assert (await client.post("/api/rooms", json={"roomId": room_id})).status_code == 201
    r = await client.get("/api/rooms")
    assert [x["roomId"] for x in r.json()["rooms"]] == ["r-a", "r-b", "r-b-2", "r-c"]
    assert r.json()["count"] == 4 and r.json()["nextCursor"] is None
    r = await client.get("/api/rooms", params={"limit": 2})
    assert [x["roomId"] for x in r.json()["rooms"]] == ["r-a", "r-b"] and r.json()["nextCursor"] == "r-b"
    r = await client.get("/api/rooms", params={"limit": 2, "cursor": "r-b"})
    assert [x["roomId"] for x in r.json()["rooms"]] == ["r-b-2", "r-c"] and r.json()["nextCursor"] is None
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}):
        _error(await client.get("/api/rooms", params=bad), 400)


async def test_delete_stops_the_room_and_frees_its_slots(
    live: Rooms, client: httpx.AsyncClient, etcd: EtcdStore, keyspace: Keyspace
) -> None:
    # A janus record keeps the room in "removing" (the module has not let go yet).
    await client.post("/api/rooms", json={"roomId": "room-del"})
    await etcd.put(
        keyspace.room_key("room-del", "janus"),
        b'{"janusId":"janus-1","status":"room_created","generation":0,"updatedAt":"2026-01-01T00:00:00Z"}',
    )
    r = await client.delete("/api/rooms/room-del")
    assert r.status_code == 200 and r.json() == {"success": True, "message": "Room room-del stopped"}
    room = (await client.get("/api/rooms/room-del")).json()["room"]
    assert room["status"] == "removing" and room["janus"] is None and "discardAt" in room
    assert await live.store.read_all_slots() == []
    # Repeating it is fine and keeps discardAt.
    r = await client.delete("/api/rooms/room-del")
    assert r.status_code == 200
    assert (await client.get("/api/rooms/room-del")).json()["room"]["discardAt"] == room["discardAt"]
    _error(await client.delete("/api/rooms/nope-missing"), 404, "Room nope-missing not found")
    _error(await client.delete("/api/rooms/x"), 400)


async def test_stats(live: Rooms, client: httpx.AsyncClient) -> None:
    await client.post("/api/rooms", json={"roomId": "s-1"})
    await client.post("/api/rooms", json={"roomId": "s-2"})
    await client.delete("/api/rooms/s-2")

    async def s2_gone() -> bool:
        return (await client.get("/api/rooms/s-2")).status_code == 404

    # No module records: the removal finishes at once (reconcile), not after the grace.
    await eventually(s2_gone, 5, "s-2 deleted")
    r = await client.get("/api/stats")
    assert r.status_code == 200
    stats = r.json()["stats"]
    assert stats["rooms"] == {"total": 1, "totalParticipants": 0, "onair": 1, "removing": 0, "starting": 0}
    assert stats["modules"]["mixers"] == {
        "total": 1,
        "healthy": 1,
        "pickable": 1,
        "capacity": 10,
        "assigned": 1,
    }


async def test_live_anchor_counts_come_from_redis(
    live: Rooms, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await client.post("/api/rooms", json={"roomId": "s-live", "maxAnchors": 4})
    keys = UserKeys(live.config.redis_user_svc_prefix)
    now_ms = int(clock().timestamp() * 1000)
    users = [str(uuid.uuid4()) for _ in range(4)]
    fields = {f"m:{u}": "anchor" for u in users}
    fields[f"s:{users[0]}"] = f"{now_ms - 1000},onair,2"
    fields[f"s:{users[1]}"] = f"{now_ms - 5000},idle,1"
    fields[f"s:{users[2]}"] = f"{now_ms - 40_000},onair,1"  # stale: not connected
    fields[f"s:{users[3]}"] = f"{now_ms},left,1"
    client_redis = Redis(host=LOOPBACK, port=int(live.config.redis.addr.rsplit(":", 1)[1]))
    try:
        for field, value in fields.items():
            await client_redis.hset(keys.room_users("s-live"), field, value)
        r = await client.get("/api/rooms/s-live/stats")
        assert r.status_code == 200
        assert r.json() == {
            "success": True,
            "stats": {"roomId": "s-live", "status": "onair", "maxAnchors": 4, "anchors": 2},
        }
        assert (await client.get("/api/stats")).json()["stats"]["rooms"]["totalParticipants"] == 2
        _error(await client.get("/api/rooms/no-such-room/stats"), 404)
    finally:
        await client_redis.aclose()


async def test_marks(live: Rooms, client: httpx.AsyncClient, states: StateStore, etcd: EtcdStore) -> None:
    r = await client.put("/api/modules/mixers/mixer-1/mark", json={"label": "cordon"}, headers=AUTH)
    assert r.status_code == 200
    assert r.json() == {
        "success": True,
        "message": "Module mark set successfully",
        "module": {"type": "mixers", "id": "mixer-1", "label": "cordon", "ttl": 0},
    }
    got = await states.get(StateKey("mixers", "mixer-1", "mark"))
    assert got is not None and got.record == Mark(label=MarkLabel.CORDON) and got.lease == 0
    r = await client.put(
        "/api/modules/januses/janus-x_2/mark", json={"label": "draining", "ttl": 60}, headers=AUTH
    )
    assert r.status_code == 200 and r.json()["module"]["ttl"] == 60
    got = await states.get(StateKey("januses", "janus-x_2", "mark"))
    assert got is not None and got.lease != 0
    r = await client.delete("/api/modules/januses/janus-x_2/mark", headers=AUTH)
    assert r.status_code == 200 and r.json() == {
        "success": True,
        "message": "Module mark deleted successfully",
        "module": {"type": "januses", "id": "janus-x_2"},
    }
    assert await states.get(StateKey("januses", "janus-x_2", "mark")) is None


@pytest.mark.parametrize(
    ("path", "body", "word"),
    [
        ("/api/modules/gateways/mixer-1/mark", {"label": "ready"}, "moduleType"),
        ("/api/modules/Mixers/mixer-1/mark", {"label": "ready"}, "moduleType"),
        ("/api/modules/mixers/mx/mark", {"label": "ready"}, "moduleId"),
        ("/api/modules/mixers/mixer.1/mark", {"label": "ready"}, "moduleId"),
        ("/api/modules/mixers/mixer-1/mark", {"label": "drain"}, "label"),
        ("/api/modules/mixers/mixer-1/mark", {}, "label"),
        ("/api/modules/mixers/mixer-1/mark", {"label": "ready", "ttl": 86401}, "ttl"),
        ("/api/modules/mixers/mixer-1/mark", {"label": "ready", "ttl": -1}, "ttl"),
        ("/api/modules/mixers/mixer-1/mark", {"label": "ready", "ttl": "5"}, "ttl"),
        ("/api/modules/mixers/mixer-1/mark", {"label": "ready", "other": 1}, "other"),
    ],
)
async def test_mark_validation(
    live: Rooms, client: httpx.AsyncClient, path: str, body: Any, word: str
) -> None:
    r = await client.put(path, json=body, headers=AUTH)
    _error(r, 400)
    assert word in r.text


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/api/rooms", b'{"roomId": "guarded-1"}', 201),
        ("DELETE", "/api/rooms/guarded-0", b"", 200),
        ("PUT", "/api/modules/mixers/mixer-1/mark", b'{"label": "ready"}', 200),
        ("DELETE", "/api/modules/mixers/mixer-1/mark", b"", 200),
        ("GET", "/api/modules", b"", 200),
    ],
)
async def test_api_token_guards_every_write(
    live: Rooms, client: httpx.AsyncClient, method: str, path: str, body: bytes, status: int
) -> None:
    assert (await client.post("/api/rooms", json={"roomId": "guarded-0"})).status_code == 201
    before = (await client.get("/api/rooms")).json()
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=10.0) as anonymous:
        for headers, code, error in [
            ({}, 401, "API token required (Authorization: Bearer <API token>)"),
            ({"Authorization": "Basic abc"}, 401, None),
            ({"Authorization": "Bearer"}, 401, None),
            ({"Authorization": "Bearer wrong"}, 403, "wrong API token"),
            ({"Authorization": f"Bearer {API_TOKEN}x"}, 403, "wrong API token"),
        ]:
            r = await anonymous.request(method, path, content=body, headers=headers)
            _error(r, code, error)
        # a refused write changed nothing
        assert (await anonymous.get("/api/rooms")).json() == before
        r = await anonymous.request(method, path, content=body, headers=AUTH)
        assert r.status_code == status, r.text


async def test_reads_need_no_token(live: Rooms, client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/rooms", json={"roomId": "open-read"})).status_code == 201
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=10.0) as anonymous:
        for path in ("/api/rooms", "/api/rooms/open-read", "/api/stats", "/health", "/schema/openapi.json"):
            r = await anonymous.get(path)
            assert r.status_code == 200, (path, r.text)
        assert "pin" not in (await anonymous.get("/api/rooms/open-read")).json()["room"]


async def test_modules_listing_and_drained(live: Rooms, client: httpx.AsyncClient) -> None:
    await client.post("/api/rooms", json={"roomId": "m-1"})
    await client.put("/api/modules/januses/janus-1/mark", json={"label": "cordon"}, headers=AUTH)
    await client.put("/api/modules/januses/janus-9/mark", json={"label": "draining"}, headers=AUTH)

    async def listed() -> dict[str, dict[str, Any]]:
        r = await client.get("/api/modules", headers=AUTH)
        assert r.status_code == 200
        return {f"{m['type']}/{m['id']}": m for m in r.json()["modules"]}

    async def marks_seen() -> bool:
        got = await listed()
        return "januses/janus-9" in got and got["januses/janus-1"]["label"] == "cordon"

    await eventually(marks_seen, 5, "marks in the cache")
    got = await listed()
    assert got["mixers/mixer-1"]["healthy"] is True and got["mixers/mixer-1"]["pickable"] is True
    assert got["mixers/mixer-1"]["load"] == {"assigned": 1, "capacity": 10}
    assert got["mixers/mixer-1"]["heartbeat"]["capacity"] == 10
    assert got["januses/janus-1"]["pickable"] is False and got["januses/janus-1"]["load"]["assigned"] == 1
    # Marked draining, no heartbeat and no rooms: shown as drained.
    assert got["januses/janus-9"]["label"] == "drained" and got["januses/janus-9"]["heartbeat"] is None


async def test_health_metrics_schema(live: Rooms, client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["service"] == "rooms"
    assert r.json()["checks"] == {"etcd": True, "nats": True, "relay": True, "reconciler": True}
    await client.post("/api/rooms", json={"roomId": "metrics-1"})
    r = await client.get("/metrics")
    assert r.status_code == 200 and "rtc_rooms_created_total" in r.text
    r = await client.get("/schema/openapi.json")
    paths = r.json()["paths"]
    assert set(paths) >= {"/api/rooms", "/api/rooms/{room_id}", "/api/modules", "/api/stats", "/health"}
    assert paths["/api/rooms"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    _error(await client.get("/nowhere"), 404)
    _error(await client.patch("/api/rooms"), 405)
