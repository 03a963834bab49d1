"""svc_users room users over real HTTP, NATS, Redis and etcd: every endpoint and error, the
maxAnchors rule, tokens, status reports (gen ordering, expiry), members events, kick and mute
delivered to a stand-in gateway, room deletion. Time is the injected clock, never a sleep."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from common import records
from common.bus import ERROR_CODE_HEADER, Bus, Message
from common.keys import Keyspace, StateKey
from common.members import StoredStatus, parse_status
from common.records import MemberStatus, UserCommand
from common.state import StateStore
from common.usertoken import USER_AUDIENCE
from svc_users.members import ReportResult
from svc_users.reconcile import SUBSCRIPTIONS
from tests.integration.eventcore import eventually
from tests.integration.svc_users.conftest import MemberEvents, OnAir, Svc
from tests.integration.svc_users.users_helpers import API_TOKEN, JWT_SECRET, VIEWER_TOKEN_SECRET, users_app
from tests.servers import LOOPBACK, EtcdServer, NatsServer, RedisServer

API = {"Authorization": f"Bearer {API_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create(
    svc: Svc, room: str, status: int = 200, headers: dict[str, str] | None = None, **body: Any
) -> Any:
    r = await svc.http.post(
        f"/api/rooms/{room}/users", json=body, headers=API if headers is None else headers
    )
    assert r.status_code == status, r.text
    return r.json()


def refused(r: httpx.Response, status: int, error: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False, body
    if error is not None:
        assert body["error"] == error, body


async def stored_status(svc: Svc, room: str, user: str) -> StoredStatus | None:
    raw = await svc.app.store.client.hget(svc.app.store.keys.room_users(room), f"s:{user}")
    return parse_status(raw.decode() if isinstance(raw, bytes) else raw)


def one(room: str, user: str, status: str, gen: int, **extra: Any) -> dict[str, Any]:
    return {"roomId": room, "userId": user, "status": status, "gen": gen, **extra}


async def report_batch(bus: Bus, *reports: dict[str, Any]) -> list[dict[str, Any]]:
    """Send one rtc.users.status batch; the per-report results."""
    payload = json.dumps({"reports": list(reports)}).encode()
    reply = json.loads(await bus.request("rtc.users.status", payload, timeout_s=5))
    assert reply["ok"] is True and len(reply["results"]) == len(reports), reply
    results: list[dict[str, Any]] = reply["results"]
    return results


async def report(bus: Bus, room: str, user: str, status: str, gen: int, **extra: Any) -> dict[str, Any]:
    """A batch of one report; its result."""
    [result] = await report_batch(bus, one(room, user, status, gen, **extra))
    return result


# -- create ------------------------------------------------------------------------------


async def test_create_user_token_and_claims(svc: Svc, onair: OnAir) -> None:
    await onair("room-c1")
    body = await create(svc, "room-c1", role="host", displayName="Ann")
    assert set(body) == {"userID", "token", "expiresIn"} and body["expiresIn"] == 3600
    claims = jwt.decode(body["token"], JWT_SECRET, algorithms=["HS256"], audience=USER_AUDIENCE)
    assert claims["sub"] == body["userID"] and claims["roomId"] == "room-c1" and claims["role"] == "host"
    assert claims["exp"] - claims["iat"] == 3600 and claims["iat"] == int(svc.clock())
    assert jwt.get_unverified_header(body["token"])["alg"] == "HS256"
    svc.clock.advance(0.01)
    guest = await create(svc, "room-c1", role="guest")
    assert (
        jwt.decode(guest["token"], JWT_SECRET, algorithms=["HS256"], audience=USER_AUDIENCE)["role"]
        == "anchor"
    )
    svc.clock.advance(0.01)  # members are listed oldest first
    by_pin = await create(svc, "room-c1", headers={}, role="anchor", pin="abc123")
    r = await svc.http.get("/api/rooms/room-c1/users", headers=API)
    assert r.status_code == 200
    members = r.json()
    assert members["roomId"] == "room-c1"
    assert [m["userId"] for m in members["members"]] == [body["userID"], guest["userID"], by_pin["userID"]]
    assert members["members"][0] == {
        "userId": body["userID"],
        "role": "host",  # no "status": never connected
        "connected": False,
        "talking": False,
        "muted": False,
        "displayName": "Ann",
    }


async def test_create_user_errors(svc: Svc, onair: OnAir) -> None:
    await onair("room-e1")
    await onair("room-off", live=False)
    url = "/api/rooms/room-e1/users"
    refused(await svc.http.post(url, json={"role": "anchor"}), 401)
    refused(await svc.http.post(url, json={"role": "anchor", "pin": "zzz999"}), 403, "invalid room pin")
    refused(
        await svc.http.post(url, json={"role": "host", "pin": "abc123"}),
        403,
        "a host user needs the API token",
    )
    refused(
        await svc.http.post(url, json={"role": "anchor"}, headers=bearer("not-the-token")),
        403,
        "wrong API token",
    )
    refused(
        await svc.http.post(url, json={"role": "king"}, headers=API),
        400,
        "role must be host, anchor or guest",
    )
    refused(await svc.http.post(url, json={"role": "anchor", "x": 1}, headers=API), 400)
    refused(await svc.http.post(url, content=b"", headers=API), 400)
    refused(await svc.http.post(url, json={"role": "anchor", "displayName": "x" * 65}, headers=API), 400)
    refused(await svc.http.post("/api/rooms/no-room/users", json={"role": "anchor"}, headers=API), 404)
    refused(await svc.http.post("/api/rooms/room-off/users", json={"role": "anchor"}, headers=API), 404)
    refused(await svc.http.post("/api/rooms/no-room/users", json={"role": "anchor", "pin": "abc123"}), 404)
    refused(await svc.http.post("/api/rooms/a.b/users", json={"role": "anchor"}, headers=API), 400)
    preflight = await svc.http.options(
        url,
        headers={
            "Origin": "http://app.example",
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code in (200, 204)
    assert "DELETE" in preflight.headers["access-control-allow-methods"]


async def test_max_anchors_counts_connected_and_fresh_users(svc: Svc, onair: OnAir, bus: Bus) -> None:
    await onair("room-max", max_anchors=2)
    a = await create(svc, "room-max", role="anchor")
    await create(svc, "room-max", role="anchor")
    refused(
        await svc.http.post("/api/rooms/room-max/users", json={"role": "anchor"}, headers=API),
        409,
        "reached max anchors limit",
    )
    svc.clock.advance(29.5)  # still fresh
    await create(svc, "room-max", role="host", status=409)
    svc.clock.advance(1.0)  # 30.5 s: both never connected, their places are free again
    c = await create(svc, "room-max", role="anchor")
    assert (await report(bus, "room-max", c["userID"], "onair", 1)) == {"changed": True}
    assert (await report(bus, "room-max", a["userID"], "idle", 1))["changed"] is True  # a late joiner
    await create(svc, "room-max", role="anchor", status=409)  # a and c connected
    await report(bus, "room-max", a["userID"], "left", 1)
    await create(svc, "room-max", role="anchor")  # a left: c + this fresh one
    await create(svc, "room-max", role="anchor", status=409)
    svc.clock.advance(31)  # c's status is stale (not refreshed), the fresh one is old
    await create(svc, "room-max", role="anchor")


# -- tokens ------------------------------------------------------------------------------


async def test_list_auth_expiry_and_secret_separation(svc: Svc, onair: OnAir) -> None:
    await onair("room-t1")
    await onair("room-t2")
    user = await create(svc, "room-t1", role="anchor")
    other = await create(svc, "room-t2", role="anchor")
    url = "/api/rooms/room-t1/users"
    assert (await svc.http.get(url, headers=bearer(user["token"]))).status_code == 200
    refused(await svc.http.get(url), 401)
    refused(await svc.http.get(url, headers=bearer(other["token"])), 403, "user token is for another room")
    r = await svc.http.post("/api/token", json={"roomId": "room-t1"})
    refused(await svc.http.get(url, headers=bearer(r.json()["token"])), 401)  # a viewer token
    claims = jwt.decode(user["token"], JWT_SECRET, algorithms=["HS256"], audience=USER_AUDIENCE)
    forged = jwt.encode(claims, VIEWER_TOKEN_SECRET, algorithm="HS256")  # right claims, viewer secret
    refused(await svc.http.get(url, headers=bearer(forged)), 401, "invalid user token")
    none_alg = jwt.encode(claims, key="", algorithm="none")
    refused(await svc.http.get(url, headers=bearer(none_alg)), 401)
    svc.clock.advance(3600)
    refused(await svc.http.get(url, headers=bearer(user["token"])), 401, "user token expired")
    assert (await svc.http.get(url, headers=API)).status_code == 200


# -- status reports ----------------------------------------------------------------------


async def test_status_reports_and_their_errors(svc: Svc, onair: OnAir, bus: Bus) -> None:
    await onair("room-s1")
    user = (await create(svc, "room-s1", role="anchor"))["userID"]
    assert await report(bus, "room-s1", user, "idle", 1) == {"changed": True}
    assert await report(bus, "room-s1", user, "idle", 1) == {"changed": False}
    assert await report(bus, "room-s1", user, "onair", 1, talking=True) == {"changed": True}
    assert await report(bus, "room-s1", user, "onair", 1, talking=True) == {"changed": False}
    member = (await svc.app.users.members("room-s1", f"Bearer {API_TOKEN}"))[0]
    assert (member.status, member.connected, member.talking) == (MemberStatus.ONAIR, True, True)
    # a report of an older connection is ignored
    assert await report(bus, "room-s1", user, "idle", 3) == {"changed": True}
    assert await report(bus, "room-s1", user, "left", 2) == {"changed": False}
    member = (await svc.app.users.members("room-s1", f"Bearer {API_TOKEN}"))[0]
    assert member.status is MemberStatus.IDLE

    async def refused_request(payload: bytes) -> dict[str, Any]:
        msg = await bus.nc.request("rtc.users.status", payload, timeout=5)
        assert msg.headers is not None and msg.headers[ERROR_CODE_HEADER] == "400"
        body: dict[str, Any] = json.loads(msg.data)
        assert body["ok"] is False and body["code"] == 400 and body["type"] == "RecordDecodeError"
        return body

    # an undecodable item refuses the whole batch: nothing of it is written
    missing = {"roomId": "room-s1", "userId": user}
    body = await refused_request(
        json.dumps({"reports": [one("room-s1", user, "onair", 9), missing]}).encode()
    )
    assert "$.reports[1].status" in body["error"]
    assert (await stored_status(svc, "room-s1", user)) == StoredStatus(
        ts_ms=svc.app.users.now_ms(), status=MemberStatus.IDLE, gen=3
    )
    await refused_request(b"not json")
    await refused_request(json.dumps({"reports": [one("room-s1", user, "onair", 1) | {"gen": "1"}]}).encode())
    await refused_request(json.dumps({"reports": []}).encode())
    await refused_request(json.dumps(one("room-s1", user, "onair", 1)).encode())  # not a batch
    # an unknown user is refused on its own: the others of its batch are written
    unknown = "0b7e3a4c-5d6f-4a1b-8c2d-3e4f5a6b7c8d"
    results = await report_batch(bus, one("room-s1", unknown, "idle", 1), one("room-s1", user, "onair", 3))
    assert results == [{"error": "no such user in this room", "code": 404}, {"changed": True}]


async def test_a_batch_is_applied_in_order_with_one_event_per_changed_room(
    svc: Svc, onair: OnAir, bus: Bus, member_events: MemberEvents
) -> None:
    await onair("room-b1")
    await onair("room-b2")
    a = (await create(svc, "room-b1", role="anchor"))["userID"]
    b = (await create(svc, "room-b1", role="anchor"))["userID"]
    c = (await create(svc, "room-b2", role="anchor"))["userID"]
    await member_events.until(lambda e: e.room_id == "room-b2" and len(e.members) == 1)
    while not member_events.queue.empty():
        member_events.queue.get_nowait()
    results = await report_batch(
        bus,
        one("room-b1", a, "idle", 2),
        one("room-b1", b, "onair", 1, talking=True),
        one("room-b1", a, "onair", 1),  # older than the gen-2 report just before it: ignored
        one("room-b2", c, "idle", 1),
        one("room-b1", a, "onair", 2),  # same gen, later in the batch: applied
        one("room-b2", c, "idle", 1),  # a refresh only
    )
    assert results == [{"changed": v} for v in (True, True, False, True, True, False)]
    stored = await stored_status(svc, "room-b1", a)
    assert stored is not None and (stored.status, stored.gen) == (MemberStatus.ONAIR, 2)
    # one event per changed room, each with the room's state after the whole batch
    events = [await asyncio.wait_for(member_events.queue.get(), 5) for _ in range(2)]
    by_room = {event.room_id: event for _subject, event, _raw in events}
    assert set(by_room) == {"room-b1", "room-b2"}
    assert {m.user_id: (m.status, m.talking) for m in by_room["room-b1"].members} == {
        a: (MemberStatus.ONAIR, False),
        b: (MemberStatus.ONAIR, True),
    }
    await asyncio.sleep(0.2)
    assert member_events.queue.empty()


async def test_gen_ordering_under_concurrent_reports(svc: Svc, onair: OnAir, bus: Bus) -> None:
    await onair("room-g1")
    user = (await create(svc, "room-g1", role="anchor"))["userID"]
    store = svc.app.store
    gens = list(range(1, 61))
    random.Random(11).shuffle(gens)
    statuses = [MemberStatus.IDLE, MemberStatus.ONAIR, MemberStatus.LEFT]
    # straight to Redis, all in flight at once (the Lua script is the only guard)
    results = await asyncio.gather(
        *(store.report("room-g1", user, statuses[g % 3], g, now_ms=svc.app.users.now_ms()) for g in gens)
    )
    assert ReportResult.STALE in results
    stored = await stored_status(svc, "room-g1", user)
    assert stored is not None and stored.gen == 60 and stored.status is statuses[60 % 3]
    # and through NATS, concurrent requests
    gens = list(range(61, 101))
    random.Random(12).shuffle(gens)
    await asyncio.gather(*(report(bus, "room-g1", user, statuses[g % 3].value, g) for g in gens))
    stored = await stored_status(svc, "room-g1", user)
    assert stored is not None and stored.gen == 100 and stored.status is statuses[100 % 3]


async def test_status_expires_to_left_and_events_carry_the_full_list(
    svc: Svc, onair: OnAir, bus: Bus, member_events: MemberEvents
) -> None:
    await onair("room-x1")
    a = (await create(svc, "room-x1", role="host", displayName="A"))["userID"]
    svc.clock.advance(0.01)
    b = (await create(svc, "room-x1", role="anchor"))["userID"]
    await report(bus, "room-x1", a, "onair", 4, talking=True)
    await report(bus, "room-x1", b, "idle", 1)
    event = await member_events.until(lambda e: all(m.connected for m in e.members) and len(e.members) == 2)
    assert [m.user_id for m in event.members] == [a, b] and event.room_id == "room-x1"
    assert event.members[0].talking and event.members[0].display_name == "A"
    svc.clock.advance(20)
    await report(bus, "room-x1", b, "idle", 1)  # b refreshes, a does not
    svc.clock.advance(15)
    await svc.app.expiry.run_once()
    event = await member_events.until(lambda e: not e.members[0].connected)
    assert [(m.status, m.connected, m.talking) for m in event.members] == [
        (MemberStatus.LEFT, False, False),
        (MemberStatus.IDLE, True, False),
    ]
    stored = await stored_status(svc, "room-x1", a)
    assert stored is not None and stored.status is MemberStatus.LEFT and stored.gen == 4


async def test_idle_room_is_dropped_after_room_max_ttl(svc: Svc, onair: OnAir, bus: Bus) -> None:
    await onair("room-ttl")
    a = (await create(svc, "room-ttl", role="anchor"))["userID"]
    await report(bus, "room-ttl", a, "left", 1)
    svc.clock.advance(3 * 3600)
    await svc.app.expiry.run_once()
    assert "room-ttl" in await svc.app.store.rooms()
    svc.clock.advance(3 * 3600)
    await svc.app.expiry.run_once()
    assert "room-ttl" not in await svc.app.store.rooms()
    assert await svc.app.store.client.exists(svc.app.store.keys.room_users("room-ttl")) == 0


# -- kick and mute -----------------------------------------------------------------------


async def test_kick_and_mute_reach_the_gateway_holding_the_user(
    svc: Svc, onair: OnAir, bus: Bus, member_events: MemberEvents
) -> None:
    await onair("room-k1")
    host = await create(svc, "room-k1", role="host")
    anchor = await create(svc, "room-k1", role="anchor")
    uid = anchor["userID"]
    commands: list[UserCommand] = []

    async def gateway(msg: Message) -> None:
        commands.append(records.decode_payload(UserCommand, msg.data))
        await msg.respond(b'{"delivered": true}')

    sub = await bus.subscribe("rtc.gateway.gw-1.users", gateway)
    store = svc.app.store
    mute_url = f"/api/rooms/room-k1/users/{uid}/mute"
    try:
        # not connected: stored for the next join, not delivered
        r = await svc.http.post(mute_url, json={"muted": True}, headers=bearer(host["token"]))
        assert r.status_code == 200 and r.json() == {"delivered": False}
        await member_events.until(lambda e: any(m.muted for m in e.members))
        await store.client.set(store.keys.conn_lock(uid), "gw-1:conn-7", px=30_000)
        r = await svc.http.post(mute_url, json={"muted": False}, headers=API)
        assert r.json() == {"delivered": True}
        assert commands[-1] == UserCommand(
            room_id="room-k1", user_id=uid, action=records.UserAction.MUTE, muted=False
        )
        refused(await svc.http.post(mute_url, json={"muted": True}, headers=bearer(anchor["token"])), 403)
        refused(await svc.http.post(mute_url, json={"muted": "yes"}, headers=API), 400)
        missing = "/api/rooms/room-k1/users/0b7e3a4c-5d6f-4a1b-8c2d-3e4f5a6b7c8d"
        refused(await svc.http.post(f"{missing}/mute", json={"muted": True}, headers=API), 404)
        refused(await svc.http.delete(missing, headers=API), 404)
        refused(await svc.http.delete("/api/rooms/room-k1/users/not-a-uuid", headers=API), 400)
        refused(await svc.http.delete(f"/api/rooms/room-k1/users/{uid}"), 401)

        r = await svc.http.delete(f"/api/rooms/room-k1/users/{uid}", headers=bearer(host["token"]))
        assert r.status_code == 200 and r.json() == {}
        assert commands[-1] == UserCommand(room_id="room-k1", user_id=uid, action=records.UserAction.KICK)
        await member_events.until(lambda e: [m.user_id for m in e.members] == [host["userID"]])
        refused(await svc.http.delete(f"/api/rooms/room-k1/users/{uid}", headers=API), 404)
        # the kicked user's token no longer lists
        refused(await svc.http.get("/api/rooms/room-k1/users", headers=bearer(anchor["token"])), 401)
    finally:
        await sub.unsubscribe()
    # a lock whose gateway is gone: nobody answers, not delivered
    other = (await create(svc, "room-k1", role="anchor"))["userID"]
    await store.client.set(store.keys.conn_lock(other), "gw-gone:c1", px=30_000)
    r = await svc.http.post(f"/api/rooms/room-k1/users/{other}/mute", json={"muted": True}, headers=API)
    assert r.json() == {"delivered": False}
    assert (await svc.http.delete(f"/api/rooms/room-k1/users/{other}", headers=API)).json() == {}


# -- room deletion -----------------------------------------------------------------------


async def test_room_deletion_removes_its_users(
    svc: Svc, onair: OnAir, store: StateStore, member_events: MemberEvents
) -> None:
    await onair("room-d1")
    await create(svc, "room-d1", role="anchor")
    await create(svc, "room-d1", role="anchor")
    await member_events.until(lambda e: len(e.members) == 2)
    await store.delete(StateKey("rooms", "room-d1", "livemeta"))
    await store.delete(StateKey("rooms", "room-d1", "meta"))
    event = await member_events.until(lambda e: e.room_id == "room-d1" and e.members == [], within_s=10)
    assert event.members == []
    assert "room-d1" not in await svc.app.store.rooms()

    async def gone() -> bool:
        return await svc.app.store.client.exists(svc.app.store.keys.room_users("room-d1")) == 0

    await eventually(gone, 5, "room hash deleted")


async def test_users_of_a_room_deleted_while_away_are_removed_by_the_expiry_pass(svc: Svc) -> None:
    # users in Redis for a room etcd never had (deleted while svc_users was down)
    store = svc.app.store
    await store.client.hset(
        store.keys.room_users("room-gone"), mapping={"m:0b7e3a4c-5d6f-4a1b-8c2d-3e4f5a6b7c8d": "anchor"}
    )
    await store.client.hset(store.keys.rooms, "room-gone", str(svc.app.users.now_ms()))
    await svc.app.expiry.run_once()

    async def gone() -> bool:
        return "room-gone" not in await store.rooms()

    await eventually(gone, 5, "orphan room cleared")


async def test_subscriptions_are_the_declared_ones(svc: Svc) -> None:
    assert sorted(svc.app.bus.subscriptions) == sorted(SUBSCRIPTIONS)


@pytest.mark.parametrize("path", ["/api/rooms/room-r/users"])
async def test_redis_down_is_503(
    path: str, tmp_path: Path, etcd_server: EtcdServer, nats_private: NatsServer, keyspace: Keyspace
) -> None:
    redis = RedisServer(tmp_path / "redis-private")
    redis.start()
    try:
        async with users_app(
            etcd_endpoint=etcd_server.endpoint,
            nats_url=nats_private.url,
            redis_addr=f"{LOOPBACK}:{redis.port}",
            keyspace=keyspace,
            hls_key_secret="users-test-key-secret-0123456789abcdef",
        ) as (url, app):
            states = StateStore(app.runtime.etcd, None, keyspace)
            meta = records.RoomMeta(
                pin="",
                max_anchors=3,
                hls_path="r/s.m3u8",
                created_at=records.parse_time("2025-01-01T00:00:00Z"),
            )
            await states.put(StateKey("rooms", "room-r", "meta"), meta)
            live = records.LiveMeta(
                status=records.LiveStatus.ONAIR,
                janus_id="janus-1",
                mixer_id="mixer-1",
                nonce="n",
                created_at=meta.created_at,
            )
            await states.put(StateKey("rooms", "room-r", "livemeta"), live)
            await asyncio.to_thread(redis.stop)
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                r = await http.post(path, json={"role": "anchor"}, headers=API)
                refused(r, 503)
                r = await http.get(path, headers=API)
                refused(r, 503)
                health = await http.get("/health")
                assert health.status_code == 503 and health.json()["checks"]["redis"] is False
    finally:
        redis.stop()
