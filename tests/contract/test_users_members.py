"""Contract of rtc.events.rooms.{roomId}.members: svc_users' message after a user is created and
reports its status validates and decodes as RoomMembers (what svc_gateway decodes)."""

from __future__ import annotations

import asyncio
import json

from common.bus import Bus, Message
from common.contracts import validate_payload
from common.keys import Keyspace
from common.records import MemberStatus, RoomMembers, decode_payload
from common.state import StateStore
from tests.contract.users_contract_helpers import users_with_room
from tests.servers import EtcdServer, NatsServer, RedisServer


async def test_members_event_validates_and_decodes(
    etcd_server: EtcdServer,
    nats_private: NatsServer,
    redis_server: RedisServer,
    keyspace: Keyspace,
    store: StateStore,
    bus: Bus,
) -> None:
    got: asyncio.Queue[Message] = asyncio.Queue()

    async def collect(msg: Message) -> None:
        await got.put(msg)

    sub = await bus.subscribe("rtc.events.rooms.*.members", collect)
    try:
        async with users_with_room(
            "contract-mem",
            etcd_server=etcd_server,
            nats=nats_private,
            redis_server=redis_server,
            keyspace=keyspace,
            store=store,
        ) as (http, _app):
            r = await http.post("/api/rooms/contract-mem/users", json={"role": "host", "displayName": "Ann"})
            user = r.json()["userID"]
            created = await asyncio.wait_for(got.get(), 5)
            report = {"roomId": "contract-mem", "userId": user, "status": "onair", "gen": 1, "talking": True}
            await bus.request("rtc.users.status", json.dumps({"reports": [report]}).encode(), timeout_s=5)
            reported = await asyncio.wait_for(got.get(), 5)
    finally:
        await sub.unsubscribe()
    for msg in (created, reported):
        assert msg.subject == "rtc.events.rooms.contract-mem.members"
        assert validate_payload(msg.subject, msg.data).name == "eventsRoomsMembers"
    event = decode_payload(RoomMembers, json.loads(reported.data))
    assert event.room_id == "contract-mem" and len(event.members) == 1
    member = event.members[0]
    assert (member.user_id, member.status, member.connected, member.talking, member.display_name) == (
        user,
        MemberStatus.ONAIR,
        True,
        True,
        "Ann",
    )
