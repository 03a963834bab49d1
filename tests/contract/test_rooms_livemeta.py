"""Contract of rtc.state.rooms.{roomId}.livemeta: onair (create), removing (delete), then the
delete of the key; every message validates and svc_rooms's runtime (a consumer) applies it."""

from __future__ import annotations

import json
from pathlib import Path

from common.contracts import validate_payload
from common.records import LiveMeta, LiveStatus, decode_record
from tests.integration.eventcore import eventually
from tests.integration.svc_rooms.fakes import rooms_harness
from tests.servers import EtcdServer


async def test_livemeta_lifecycle_validates_and_is_consumed(tmp_path: Path, etcd_server: EtcdServer) -> None:
    async with rooms_harness(tmp_path, etcd_server) as h:
        await h.module("januses", "janus-1")
        await h.module("mixers", "mixer-1")
        await h.seen("januses", 1)
        await h.seen("mixers", 1)
        cache = h.rooms.runtime.cache
        sub = await h.bus.js.subscribe("rtc.state.rooms.contract-live.livemeta", stream="RTC_STATE")
        try:
            assert (await h.client.post("/api/rooms", json={"roomId": "contract-live"})).status_code == 201
            onair = await sub.next_msg(timeout=5)
            validate_payload(onair.subject, onair.data)
            record = decode_record("livemeta", json.loads(onair.data)["value"])
            assert isinstance(record, LiveMeta) and record.status is LiveStatus.ONAIR
            await eventually(
                lambda: cache.get("rooms", "contract-live", "livemeta") == record, 5, "onair consumed"
            )
            assert (await h.client.delete("/api/rooms/contract-live")).status_code == 200
            removing = await sub.next_msg(timeout=5)
            validate_payload(removing.subject, removing.data)
            record = decode_record("livemeta", json.loads(removing.data)["value"])
            assert record.status is LiveStatus.REMOVING and record.discard_at is not None
            # No module records: svc_rooms deletes the room at once.
            deleted = await sub.next_msg(timeout=5)
            validate_payload(deleted.subject, deleted.data)
            assert json.loads(deleted.data)["op"] == "delete" and json.loads(deleted.data)["value"] is None
        finally:
            await sub.unsubscribe()
        await eventually(
            lambda: cache.get("rooms", "contract-live", "livemeta") is None, 5, "delete consumed"
        )
