"""Contract of rtc.state.rooms.{roomId}.meta: svc_rooms's message validates; a consumer takes it.

Producer: svc_rooms (POST /api/rooms). Consumer here: svc_rooms's own reconcile runtime (its
cache holds the record); svc_janus, svc_gateway and svc_users test their side in their files.
"""

from __future__ import annotations

import json
from pathlib import Path

from common.contracts import validate_payload
from common.records import RoomMeta, decode_record
from tests.integration.eventcore import eventually
from tests.integration.svc_rooms.fakes import rooms_harness
from tests.servers import EtcdServer


async def test_meta_put_validates_and_is_consumed(tmp_path: Path, etcd_server: EtcdServer) -> None:
    async with rooms_harness(tmp_path, etcd_server) as h:
        await h.module("januses", "janus-1")
        await h.module("mixers", "mixer-1")
        await h.seen("januses", 1)
        await h.seen("mixers", 1)
        sub = await h.bus.js.subscribe("rtc.state.rooms.*.meta", stream="RTC_STATE")
        try:
            body = {"roomId": "contract-meta", "pin": "abc123", "maxAnchors": 2}
            assert (await h.client.post("/api/rooms", json=body)).status_code == 201
            msg = await sub.next_msg(timeout=5)
        finally:
            await sub.unsubscribe()
        assert msg.subject == "rtc.state.rooms.contract-meta.meta"
        assert validate_payload(msg.subject, msg.data).name == "stateRoomsMeta"
        event = json.loads(msg.data)
        assert event["op"] == "put" and msg.headers is not None
        assert msg.headers["Nats-Msg-Id"] == f"{event['key']}@{event['revision']}"
        record = decode_record("meta", event["value"])
        assert isinstance(record, RoomMeta) and record.pin == "abc123" and record.max_anchors == 2
        cache = h.rooms.runtime.cache
        await eventually(lambda: cache.get("rooms", "contract-meta", "meta") == record, 5, "consumer has it")
