"""Notifications from NATS: ``roomStatus`` to members on two gateways, ``reconnect`` on room
events, and svc_users' kick and mute commands to the gateway holding the user."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from redis.asyncio import Redis

from common import keys, records
from common.bus import Bus
from common.records import MemberRole, MemberStatus
from common.state import StateStore
from common.userkeys import UserKeys
from tests.integration.svc_gateway.gw_helpers import (
    FakePool,
    UsersStandIn,
    client,
    running_gateway,
    seed_room,
    seed_user,
    user_token,
)

EnvFactory = Callable[..., dict[str, str]]


def join_params() -> dict[str, str]:
    return {"clientId": str(uuid.uuid4()), "pin": "pin123"}


async def test_room_status_reaches_members_on_two_gateways(
    env: EnvFactory, store: StateStore, redis: Redis, prefix: str, bus: Bus, users: UsersStandIn
) -> None:
    await seed_room(store, "room-f1")
    await seed_room(store, "room-f2")
    u1 = await seed_user(redis, prefix, "room-f1")
    u2 = await seed_user(redis, prefix, "room-f1")
    outsider = await seed_user(redis, prefix, "room-f2")
    async with (
        running_gateway(env(), pool=FakePool()) as gw1,
        running_gateway(env(), pool=FakePool()) as gw2,
        client(gw1, user_token(u1, "room-f1")) as c1,
        client(gw2, user_token(u2, "room-f1")) as c2,
        client(gw2, user_token(outsider, "room-f2")) as c3,
    ):
        await c1.result("join", join_params())
        await c2.result("join", join_params())
        members = records.RoomMembers(
            room_id="room-f1",
            members=[
                records.Member(user_id=u1, role=MemberRole.HOST, status=MemberStatus.ONAIR, connected=True),
                records.Member(user_id=u2, role=MemberRole.ANCHOR, status=MemberStatus.IDLE, connected=True),
            ],
            at=datetime.now(UTC),
        )
        await bus.publish(keys.event_subject("rooms", "room-f1", "members"), records.encode_record(members))
        expected = [
            {
                "userId": u1,
                "role": "host",
                "status": "onair",
                "connected": True,
                "talking": False,
                "muted": False,
                "displayName": "",
            },
            {
                "userId": u2,
                "role": "anchor",
                "status": "idle",
                "connected": True,
                "talking": False,
                "muted": False,
                "displayName": "",
            },
        ]
        for c in (c1, c2):
            note = await c.notification("roomStatus")
            assert note["params"] == expected and "id" not in note
        assert c3.notifications.empty()


async def test_reconnect_on_migrated_and_janus_restarted(
    env: EnvFactory, store: StateStore, redis: Redis, prefix: str, bus: Bus, users: UsersStandIn
) -> None:
    await seed_room(store, "room-f3")
    uid = await seed_user(redis, prefix, "room-f3")
    pool = FakePool()
    async with running_gateway(env(), pool=pool) as gw, client(gw, user_token(uid, "room-f3")) as c:
        await c.result("join", join_params())
        now = datetime.now(UTC)
        mixer_moved = records.RoomMigrated(
            room_id="room-f3",
            kind=records.MigrationKind.MIXER,
            from_="mixer-a1",
            to="mixer-b1",
            generation=2,
            reason=records.MigrationReason.LEASE_EXPIRED,
            at=now,
        )
        janus_moved = records.RoomMigrated(
            room_id="room-f3",
            kind=records.MigrationKind.JANUS,
            from_="janus-gw1",
            to="janus-gw2",
            generation=3,
            reason=records.MigrationReason.DRAINING,
            at=now,
        )
        for event in (mixer_moved, janus_moved):
            await bus.publish(
                keys.event_subject("rooms", "room-f3", "migrated"), records.encode_record(event)
            )
        note = await c.notification("reconnect")
        assert note["params"] == {"reason": "migrated"}
        assert c.notifications.empty()  # the mixer migration sent nothing
        assert pool.legs[0].released
        # joined again on the same socket, then the Janus restarts
        await c.result("join", join_params())
        restarted = records.JanusRestarted(
            room_id="room-f3", janus_id="janus-gw1", janus_room_id=4242, at=now
        )
        await bus.publish(
            keys.event_subject("rooms", "room-f3", "janus_restarted"), records.encode_record(restarted)
        )
        assert (await c.notification("reconnect"))["params"] == {"reason": "janus_restarted"}


async def test_kick_and_mute_commands(
    env: EnvFactory, store: StateStore, redis: Redis, prefix: str, bus: Bus, users: UsersStandIn
) -> None:
    await seed_room(store, "room-f4")
    uid = await seed_user(redis, prefix, "room-f4")
    bystander = await seed_user(redis, prefix, "room-f4")
    pool = FakePool()
    async with (
        running_gateway(env(), pool=pool) as gw,
        client(gw, user_token(uid, "room-f4")) as c,
        client(gw, user_token(bystander, "room-f4")) as other,
    ):
        await c.result("join", join_params())
        await other.result("join", join_params())
        await c.result("offer", {"sdp": {"type": "offer", "sdp": "v=0"}})
        # what svc_users does: the lock names the gateway process holding the user
        server_id = (await redis.get(UserKeys(prefix).conn_lock(uid))).decode().partition(":")[0]
        subject = keys.gateway_users_subject(server_id)

        async def command(user: str, action: records.UserAction, muted: bool | None = None) -> bool:
            cmd = records.UserCommand(room_id="room-f4", user_id=user, action=action, muted=muted)
            reply = await bus.request(subject, records.encode_record(cmd), timeout_s=5)
            return bool(json.loads(reply)["delivered"])

        assert await command(uid, records.UserAction.MUTE, muted=True)
        assert (await c.notification("muted"))["params"] == {"userId": uid, "muted": True}
        assert ("configure", True) in pool.legs[0].calls
        assert not await command(str(uuid.uuid4()), records.UserAction.KICK)  # not connected here

        assert await command(uid, records.UserAction.KICK)
        assert (await c.notification("kicked"))["params"]["reason"]
        assert (await c.closed())[0] == 4403
        assert ("leave", None) in pool.legs[0].calls, pool.legs[0].calls  # its voice is out of the room
        assert await other.result("keepalive", {}) is None
