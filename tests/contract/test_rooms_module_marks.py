"""Contract of rtc.state.januses.{janusId}.mark and rtc.state.mixers.{mixerId}.mark.

Producer: svc_rooms's admin API (PUT/DELETE /api/modules/{type}/{id}/mark). Consumer: svc_rooms's
resource manager (the mark changes what is pickable).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.contracts import validate_payload
from common.records import Mark, MarkLabel, decode_record
from tests.integration.eventcore import eventually
from tests.integration.svc_rooms.fakes import AUTH, rooms_harness
from tests.servers import EtcdServer


@pytest.mark.parametrize("collection", ["januses", "mixers"])
async def test_mark_put_and_delete_validate_and_are_consumed(
    tmp_path: Path, etcd_server: EtcdServer, collection: str
) -> None:
    async with rooms_harness(tmp_path, etcd_server) as h:
        cache = h.rooms.runtime.cache
        path = f"/api/modules/{collection}/module-7/mark"
        sub = await h.bus.js.subscribe(f"rtc.state.{collection}.module-7.mark", stream="RTC_STATE")
        try:
            r = await h.client.put(path, json={"label": "draining", "ttl": 30}, headers=AUTH)
            assert r.status_code == 200
            put = await sub.next_msg(timeout=5)
            assert validate_payload(put.subject, put.data).name == f"state{collection.capitalize()}Mark"
            record = decode_record("mark", json.loads(put.data)["value"])
            assert record == Mark(label=MarkLabel.DRAINING)
            await eventually(lambda: cache.get(collection, "module-7", "mark") == record, 5, "mark consumed")
            assert (await h.client.delete(path, headers=AUTH)).status_code == 200
            deleted = await sub.next_msg(timeout=5)
            validate_payload(deleted.subject, deleted.data)
            assert json.loads(deleted.data)["op"] == "delete"
        finally:
            await sub.unsubscribe()
        await eventually(lambda: cache.get(collection, "module-7", "mark") is None, 5, "delete consumed")
