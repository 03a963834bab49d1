"""Housekeeping rules, each driven by a fake clock against real etcd.

The housekeeper runs here without the reconcile runtime (which would finish some removals by
itself), so each rule is what acts; records are written straight into etcd.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import attrs
import pytest

from common import records
from common.etcd import EtcdStore
from common.keys import Collection, Keyspace, Kind, StateKey
from common.reconcile import StateCache, Target
from common.state import StateStore
from svc_rooms.housekeeping import Housekeeper
from svc_rooms.resources import ResourceManager
from svc_rooms.roomstore import RoomStore
from svc_rooms.service import RoomService
from tests.integration.svc_rooms.fakes import FakeClock


@attrs.define
class Rig:
    etcd: EtcdStore
    states: StateStore
    store: RoomStore
    clock: FakeClock
    enqueued: list[Target]
    hk: Housekeeper

    async def put(self, room_id: str, kind: str, record: object) -> None:
        await self.states.put(StateKey("rooms", room_id, kind), record)

    async def kinds(self, room_id: str) -> set[str]:
        room = await self.store.read_room(room_id)
        return {v.key.kind.value for v in room.present()}

    def meta(self, age_s: float = 0.0) -> records.RoomMeta:
        return records.RoomMeta(
            pin="123456",
            max_anchors=3,
            hls_path="x/stream.m3u8",
            created_at=self.clock.now - timedelta(seconds=age_s),
        )

    def onair(self) -> records.LiveMeta:
        return records.LiveMeta(
            status=records.LiveStatus.ONAIR,
            janus_id="janus-1",
            mixer_id="mixer-1",
            nonce="n" * 20,
            created_at=self.clock.now,
        )

    def removing(self) -> records.LiveMeta:
        return records.LiveMeta(
            status=records.LiveStatus.REMOVING,
            janus_id="",
            mixer_id="",
            nonce="",
            created_at=self.clock.now,
            discard_at=self.clock.now,
        )

    def janus(self) -> records.JanusRecord:
        return records.JanusRecord(
            janus_id="janus-1", status=records.JanusStatus.ROOM_CREATED, updated_at=self.clock.now
        )


@pytest.fixture
def rig(etcd: EtcdStore, keyspace: Keyspace, clock: FakeClock) -> Rig:
    states = StateStore(etcd, None, keyspace)
    store = RoomStore(etcd, None, keyspace, slots_prefix=keyspace.rooms[: -len("rooms/")] + "slots/")
    service = RoomService(
        store, states, ResourceManager(StateCache(), store), hls_adv_url="http://h/", clock=clock
    )
    enqueued: list[Target] = []
    hk = Housekeeper(
        store,
        service,
        lambda target, _delay: enqueued.append(target),
        max_age_s=3 * 3600,
        removing_grace_s=60,
        start_timeout_s=600,
        clock=clock,
    )
    return Rig(etcd=etcd, states=states, store=store, clock=clock, enqueued=enqueued, hk=hk)


async def test_removing_room_without_module_records_is_deleted_at_once(rig: Rig) -> None:
    await rig.put("gone-1", "meta", rig.meta())
    await rig.put("gone-1", "livemeta", rig.removing())
    assert (await rig.hk.run_once())["removed"] == 1
    assert await rig.kinds("gone-1") == set()


async def test_removing_room_holding_records_is_forced_after_the_grace(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    await rig.put("held-1", "meta", rig.meta())
    await rig.put("held-1", "livemeta", rig.removing())
    await rig.put("held-1", "janus", rig.janus())
    rig.clock.advance(59)
    assert not (await rig.hk.run_once())
    assert await rig.kinds("held-1") == {"meta", "livemeta", "janus"}
    rig.clock.advance(2)
    with caplog.at_level(logging.WARNING, logger="svc_rooms.housekeeping"):
        assert (await rig.hk.run_once())["forced"] == 1
    assert await rig.kinds("held-1") == set()
    assert any("force-deleted" in r.getMessage() and "held-1" in r.getMessage() for r in caplog.records)


async def test_meta_without_livemeta_is_deleted_after_ten_minutes(rig: Rig) -> None:
    await rig.put("never-1", "meta", rig.meta())
    rig.clock.advance(9 * 60)
    assert not (await rig.hk.run_once())
    assert await rig.kinds("never-1") == {"meta"}
    rig.clock.advance(2 * 60)
    assert (await rig.hk.run_once())["never_started"] == 1
    assert await rig.kinds("never-1") == set()


async def test_old_onair_room_goes_through_removing(rig: Rig) -> None:
    await rig.put("old-1", "meta", rig.meta())
    await rig.put("old-1", "livemeta", rig.onair())
    slot = rig.store.slot(Collection.MIXERS, "mixer-1", 0)
    await rig.etcd.put(slot.key, b"old-1")
    rig.clock.advance(3 * 3600 - 60)
    assert not (await rig.hk.run_once())
    assert rig.enqueued == [Target("rooms", "old-1")]  # onair rooms get a migration check
    rig.clock.advance(120)
    assert (await rig.hk.run_once())["max_age"] == 1
    room = await rig.store.read_room("old-1")
    assert room.livemeta is not None and room.livemeta.record.status is records.LiveStatus.REMOVING
    assert room.meta is not None  # not a hard delete: modules tear down first
    assert await rig.store.read_all_slots() == []
    # The next pass finishes it (no module records).
    assert (await rig.hk.run_once())["removed"] == 1


async def test_max_age_zero_means_unlimited(rig: Rig) -> None:
    rig.hk.max_age_s = 0
    await rig.put("forever-1", "meta", rig.meta())
    await rig.put("forever-1", "livemeta", rig.onair())
    rig.clock.advance(30 * 24 * 3600)
    assert not (await rig.hk.run_once())
    assert await rig.kinds("forever-1") == {"meta", "livemeta"}


async def test_recent_rooms_are_kept(rig: Rig) -> None:
    await rig.put("new-1", "meta", rig.meta())
    await rig.put("new-2", "meta", rig.meta())
    await rig.put("new-2", "livemeta", rig.onair())
    await rig.put("new-3", "meta", rig.meta())
    await rig.put("new-3", "livemeta", rig.removing())
    await rig.put("new-3", "janus", rig.janus())
    assert not (await rig.hk.run_once())
    assert {r for r in (await rig.store.read_all())} == {"new-1", "new-2", "new-3"}


async def test_leftover_module_records_and_orphan_slots_are_cleaned(rig: Rig) -> None:
    await rig.put("left-1", "janus", rig.janus())
    await rig.put("kept-1", "meta", rig.meta())
    await rig.put("kept-1", "livemeta", rig.onair())
    kept = rig.store.slot(Collection.MIXERS, "mixer-1", 0)
    wrong_module = rig.store.slot(Collection.MIXERS, "mixer-2", 0)
    no_room = rig.store.slot(Collection.JANUSES, "janus-1", 3)
    for slot, value in ((kept, b"kept-1"), (wrong_module, b"kept-1"), (no_room, b"nobody")):
        await rig.etcd.put(slot.key, value)
    rig.clock.advance(61)
    done = await rig.hk.run_once()
    assert done["orphan_records"] == 1 and done["orphan_slot"] == 2
    assert await rig.kinds("left-1") == set()
    assert [s.key for s in await rig.store.read_all_slots()] == [kept.key]
    assert Kind.META.value in await rig.kinds("kept-1")
