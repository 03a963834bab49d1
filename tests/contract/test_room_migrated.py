"""Contract of rtc.events.rooms.{roomId}.migrated: svc_rooms's message validates and decodes.

Produced when a room's mixer dies (lease expiry, then svc_rooms' grace period). Its consumer,
svc_gateway, decodes it with ``decode_payload(RoomMigrated, ...)``, which is what is checked
here for the consumer side until the gateway's own contract test exists.
"""

from __future__ import annotations

import json
from pathlib import Path

from common.contracts import validate_payload
from common.records import MigrationKind, MigrationReason, RoomMigrated, decode_payload
from tests.integration.svc_rooms.fakes import rooms_harness
from tests.servers import EtcdServer


async def test_migrated_event_validates_and_decodes(tmp_path: Path, etcd_server: EtcdServer) -> None:
    # a short grace: the mixer's rooms move 0.5 s after its lease expired
    async with rooms_harness(tmp_path, etcd_server, MODULE_GRACE_PERIOD="0.5s") as h:
        await h.module("januses", "janus-1")
        mixer = await h.module("mixers", "mixer-old", ttl_s=2)
        await h.seen("januses", 1)
        await h.seen("mixers", 1)
        assert (await h.client.post("/api/rooms", json={"roomId": "contract-mig"})).status_code == 201
        await h.module("mixers", "mixer-new")
        await h.seen("mixers", 2)
        sub = await h.bus.js.subscribe("rtc.events.rooms.*.migrated", stream="RTC_EVENTS")
        try:
            await mixer.crash()
            msg = await sub.next_msg(timeout=10)
        finally:
            await sub.unsubscribe()
    assert msg.subject == "rtc.events.rooms.contract-mig.migrated"
    assert validate_payload(msg.subject, msg.data).name == "eventsRoomsMigrated"
    assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == "contract-mig.migrated.1.mixer"
    event = decode_payload(RoomMigrated, json.loads(msg.data))
    assert (event.room_id, event.kind, event.from_, event.to) == (
        "contract-mig",
        MigrationKind.MIXER,
        "mixer-old",
        "mixer-new",
    )
    assert event.reason is MigrationReason.LEASE_EXPIRED and event.generation == 1
