"""Each JSON-RPC method's success and errors, on a real gateway (real NATS, etcd, Redis) with a
fake Janus pool; the status reports go to the test's own svc_users stand-in."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from common.records import MemberStatus
from common.state import StateStore
from svc_gateway import jtoken
from tests.integration.svc_gateway.gw_helpers import (
    NONCE,
    TOKEN_KEY,
    FakePool,
    UsersStandIn,
    client,
    running_gateway,
    seed_room,
    seed_user,
    user_token,
)

EnvFactory = Callable[..., dict[str, str]]


def join_params(**extra: Any) -> dict[str, Any]:
    return {"clientId": str(uuid.uuid4()), "pin": "pin123", **extra}


def error_of(reply: dict[str, Any]) -> tuple[int, str]:
    assert "error" in reply, reply
    return reply["error"]["code"], reply["error"]["message"]


async def test_join_offer_trickle_keepalive_mute_leave(
    env: EnvFactory, store: StateStore, redis: Redis, prefix: str, users: UsersStandIn, pool: FakePool
) -> None:
    await seed_room(store, "room-m1", janus_room_id=4242)
    uid = await seed_user(redis, prefix, "room-m1")
    async with running_gateway(env(), pool=pool) as gw, client(gw, user_token(uid, "room-m1")) as c:
        assert error_of(await c.call("offer", {"sdp": {"type": "offer", "sdp": "v=0"}})) == (
            -32600,
            "not joined yet",
        )
        joined = await c.result("join", join_params(displayName="Ann"))
        assert joined["resume"] is False and isinstance(joined["jtoken"], str)
        leg = pool.legs[0]
        assert jtoken.decode(TOKEN_KEY.encode(), joined["jtoken"], NONCE.encode()) == (
            leg.session_id,
            leg.handle_id,
        )
        assert pool.opened[0] == {"janus_id": "janus-gw1", "host": "127.0.0.1", "resume": None}
        report = await users.next()
        assert (report.user_id, report.room_id, report.status, report.gen) == (
            uid,
            "room-m1",
            MemberStatus.IDLE,
            1,
        )
        assert error_of(await c.call("join", join_params())) == (-32600, "already joined")

        answer = await c.result("offer", {"sdp": {"type": "offer", "sdp": "v=0 offer"}})
        assert answer == {"sdp": {"type": "answer", "sdp": "v=0 fake answer"}}
        assert leg.calls[-1] == (
            "join",
            {
                "room": 4242,
                "pin": "pin123",
                "display": f"user-{uid}",
                "muted": False,
                "offer": {"type": "offer", "sdp": "v=0 offer"},
            },
        )
        cand = {"candidate": "candidate:1 1 UDP 1 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
        assert await c.result("icecandidate", {"candidate": cand}) is None
        assert await c.result("icecandidate", {"candidate": None}) is None
        assert await c.result("icecandidate", {"candidate": {"completed": True}}) is None
        assert leg.calls[-3:] == [("trickle", cand), ("trickle", None), ("trickle", None)]

        assert await c.result("keepalive", {"status": "onair"}) is None
        assert (await users.next()).status == MemberStatus.ONAIR
        assert await c.result("status", {}) is None  # the alias; no status keeps the current one
        assert (await users.next()).status == MemberStatus.ONAIR
        assert error_of(await c.call("keepalive", {"status": "left"})) == (
            -32602,
            "invalid keepalive parameters",
        )

        assert await c.result("mute", {"muted": True}) is None
        assert ("configure", True) in leg.calls
        muted = await c.notification("muted")
        assert muted["params"] == {"userId": uid, "muted": True}
        report = await users.next()
        assert (report.status, report.muted) == (MemberStatus.ONAIR, True)
        assert error_of(await c.call("mute", {"muted": "yes"})) == (-32602, "invalid mute parameters")

        assert await c.result("leave") is None
        assert await c.closed() == (1000, "bye")
        assert ("leave", None) in leg.calls
        report = await users.next()
        assert (report.status, report.gen) == (MemberStatus.LEFT, 1)


async def test_leave_is_done_when_its_reply_arrives(
    env: EnvFactory, store: StateStore, redis: Redis, prefix: str, users: UsersStandIn, pool: FakePool
) -> None:
    """A client that closes its socket the moment it reads the leave reply: the user has left
    Janus and svc_users has its ``left`` already."""
    await seed_room(store, "room-m9", janus_room_id=4242)
    uid = await seed_user(redis, prefix, "room-m9")
    async with running_gateway(env(), pool=pool) as gw:
        async with client(gw, user_token(uid, "room-m9")) as c:
            await c.result("join", join_params())
            assert (await users.next()).status == MemberStatus.IDLE
            pool.legs[0].leave_delay_s = 0.3  # Janus takes its time
            await c.send({"jsonrpc": "2.0", "id": 7, "method": "leave"})
            assert (await c.reply())["result"] is None
            assert ("left", None) in pool.legs[0].calls
            await c.ws.close()
        report = await users.next()
        assert (report.user_id, report.status) == (uid, MemberStatus.LEFT)


async def test_join_errors(
    env: EnvFactory, store: StateStore, redis: Redis, prefix: str, users: UsersStandIn, pool: FakePool
) -> None:
    await seed_room(store, "room-e1")
    await seed_room(store, "room-e2", onair=False)
    await seed_room(store, "room-e3", janus_room_id=None)
    u1 = await seed_user(redis, prefix, "room-e1")
    u2 = await seed_user(redis, prefix, "room-e2")
    u3 = await seed_user(redis, prefix, "room-e3")
    ghost = await seed_user(redis, prefix, "room-ghost")  # a user hash but no room in etcd
    async with running_gateway(env(), pool=pool) as gw:
        async with client(gw, user_token(u1, "room-e1")) as c:
            assert error_of(await c.call("join", join_params(pin="wrong1"))) == (-32600, "invalid room pin")
            for bad in (
                None,
                {"pin": "pin123"},
                {"clientId": "nope"},
                {"clientId": str(uuid.uuid4()), "pin": 5},
                [1],
            ):
                assert error_of(await c.call("join", bad)) == (-32602, "invalid join parameters"), bad
            assert pool.opened == []
        async with client(gw, user_token(u2, "room-e2")) as c:
            assert error_of(await c.call("join", join_params())) == (
                -32600,
                "room does not exist or not allowed to join",
            )
        async with client(gw, user_token(ghost, "room-ghost")) as c:
            assert error_of(await c.call("join", join_params())) == (-32600, "no room found")
        async with client(gw, user_token(u3, "room-e3")) as c:
            await c.result("join", join_params())
            assert error_of(await c.call("offer", {"sdp": {"type": "offer", "sdp": "v=0"}})) == (
                -32603,
                "no janus room found",
            )
            assert error_of(await c.call("offer", {"sdp": "v=0"})) == (-32602, "invalid offer parameters")
            assert error_of(await c.call("icecandidate", {"candidate": 7})) == (
                -32602,
                "invalid icecandidate parameters",
            )
            pool.legs[0].fail.add("trickle")
            assert error_of(await c.call("icecandidate", {"candidate": None})) == (
                -32603,
                "failed to exchange ice candidate",
            )


async def test_resume_with_jtoken_and_stored_mute(
    env: EnvFactory, store: StateStore, redis: Redis, prefix: str, users: UsersStandIn, pool: FakePool
) -> None:
    await seed_room(store, "room-r1")
    uid = await seed_user(redis, prefix, "room-r1", muted=True)
    async with running_gateway(env(), pool=pool) as gw:
        async with client(gw, user_token(uid, "room-r1")) as c:
            first = await c.result("join", join_params())
            await c.result("offer", {"sdp": {"type": "offer", "sdp": "v=0"}})
            assert pool.legs[0].calls[-1][1]["muted"] is True  # mu:{uid} from Redis
        async with client(gw, user_token(uid, "room-r1")) as c:
            again = await c.result("join", join_params(jtoken=first["jtoken"]))
            assert again["resume"] is True
            assert pool.opened[-1]["resume"] == (pool.legs[0].session_id, pool.legs[0].handle_id)
            assert pool.legs[0].released  # the first connection let its leg go without leaving
        async with client(gw, user_token(uid, "room-r1")) as c:
            fresh = await c.result("join", join_params(jtoken="not-a-token"))
            assert fresh["resume"] is False and pool.opened[-1]["resume"] is None
    gens = []
    while not users.reports.empty():
        gens.append(users.reports.get_nowait().gen)
    assert gens == [1, 2, 3]


async def test_slow_janus_blocks_only_its_connection(
    env: EnvFactory, store: StateStore, redis: Redis, prefix: str, users: UsersStandIn, pool: FakePool
) -> None:
    await seed_room(store, "room-s1")
    slow_uid = await seed_user(redis, prefix, "room-s1")
    fast_uid = await seed_user(redis, prefix, "room-s1")
    async with (
        running_gateway(env(), pool=pool) as gw,
        client(gw, user_token(slow_uid, "room-s1")) as slow,
        client(gw, user_token(fast_uid, "room-s1")) as fast,
    ):
        await slow.result("join", join_params())
        await fast.result("join", join_params())
        pool.legs[0].join_delay_s = 1.5
        await slow.send({"jsonrpc": "2.0", "id": "o", "method": "offer", "params": {"sdp": {"sdp": "v=0"}}})
        await slow.send(
            {"jsonrpc": "2.0", "id": "c", "method": "icecandidate", "params": {"candidate": None}}
        )
        started = time.monotonic()
        for _ in range(5):
            await fast.result("keepalive", {"status": "idle"})
        assert time.monotonic() - started < 1.0
        # the slow connection's requests come back in order, after the offer's answer
        assert (await slow.reply())["id"] == "o"
        assert (await slow.reply())["id"] == "c"
        assert [name for name, _ in pool.legs[0].calls] == ["join", "trickle"]


async def test_leg_events_become_notifications(
    env: EnvFactory, store: StateStore, redis: Redis, prefix: str, users: UsersStandIn, pool: FakePool
) -> None:
    await seed_room(store, "room-t1")
    uid = await seed_user(redis, prefix, "room-t1")
    other = await seed_user(redis, prefix, "room-t1")
    async with running_gateway(env(), pool=pool) as gw, client(gw, user_token(uid, "room-t1")) as c:
        await c.result("join", join_params())
        leg = pool.legs[0]
        leg.on_event("joined", {"participants": [{"id": 7, "display": f"user-{other}"}]})
        leg.on_event("talking", {"id": 7, "talking": True})
        assert (await c.notification("talking"))["params"] == {"userId": other, "talking": True}
        leg.on_event("talking", {"id": 8, "display": f"user-{uid}", "talking": False})
        assert (await c.notification("talking"))["params"] == {"userId": uid, "talking": False}
        leg.on_event("gone", {"reason": "disconnected"})
        assert (await c.notification("reconnect"))["params"] == {"reason": "janus_restarted"}
        # the connection may join again on the same socket
        assert (await c.result("join", join_params()))["resume"] is False
        await asyncio.sleep(0)
