"""Which rooms are assigned here and where they forward (pure rules of svc_janus.reconcile)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from common import records
from common.keys import StateKey
from common.reconcile import Target
from common.state import StateStore, Versioned
from svc_janus.reconcile import JanusMonitor, RoomReconciler, _forward_to, _same, is_assigned
from tests.unit.svc_janus.test_service import FakeBridge, make

NOW = datetime(2026, 1, 1, tzinfo=UTC)
META = records.RoomMeta(pin="", max_anchors=3, hls_path="r/stream.m3u8", created_at=NOW)


def live(janus: str = "janus-1", mixer: str = "mixer-1", *, onair: bool = True) -> records.LiveMeta:
    if onair:
        return records.LiveMeta(
            status=records.LiveStatus.ONAIR, janus_id=janus, mixer_id=mixer, nonce="n", created_at=NOW
        )
    return records.LiveMeta(
        status=records.LiveStatus.REMOVING, janus_id="", mixer_id="", nonce="", created_at=NOW, discard_at=NOW
    )


def mixer(mixer_id: str = "mixer-1", port: int = 5000) -> records.MixerRecord:
    return records.MixerRecord(
        id=mixer_id, host="127.0.0.1", port=port, status=records.MixerStatus.READY, updated_at=NOW
    )


def test_assigned_needs_meta_onair_and_this_janus() -> None:
    view: dict[str, Any] = {"meta": META, "livemeta": live()}
    assert is_assigned(view, "janus-1")
    assert not is_assigned(view, "janus-2")
    assert not is_assigned({"livemeta": live()}, "janus-1")
    assert not is_assigned({"meta": META, "livemeta": live(onair=False)}, "janus-1")
    assert not is_assigned({"meta": META}, "janus-1")


def test_forward_only_to_the_rooms_current_mixer() -> None:
    assert _forward_to({"livemeta": live(), "mixer": mixer()}) == ("127.0.0.1", 5000)
    assert _forward_to({"livemeta": live(mixer="mixer-2"), "mixer": mixer()}) is None
    assert _forward_to({"livemeta": live()}) is None


def test_record_comparison_ignores_the_time() -> None:
    a = records.JanusRecord(
        janus_id="janus-1", janus_room_id=123456, status=records.JanusStatus.FORWARDING, updated_at=NOW
    )
    b = records.JanusRecord(
        janus_id="janus-1",
        janus_room_id=123456,
        status=records.JanusStatus.FORWARDING,
        updated_at=datetime.now(UTC),
    )
    assert _same(a, b) and not _same(None, b)
    assert not _same(
        a,
        records.JanusRecord(
            janus_id="janus-1", janus_room_id=123456, status=records.JanusStatus.ROOM_CREATED, updated_at=NOW
        ),
    )


class FakeStore:
    """The janus records svc_janus writes, in a dict (get/put with mod revisions)."""

    def __init__(self) -> None:
        self.data: dict[StateKey, Versioned] = {}
        self.revision = 0

    async def get(self, skey: StateKey) -> Versioned | None:
        return self.data.get(skey)

    async def put(self, skey: StateKey, record: Any, *, expect: Any = None) -> int:
        self.revision += 1
        self.data[skey] = Versioned(key=skey, record=record, mod_revision=self.revision)
        return self.revision


async def test_a_room_rebuilt_under_the_same_id_names_its_new_forwarder() -> None:
    bridge = FakeBridge()
    store = FakeStore()
    published: list[str] = []

    async def publish(subject: str, data: bytes) -> None:
        published.append(subject)

    reconciler = RoomReconciler(make(bridge), cast(StateStore, store), publish)
    skey = StateKey("rooms", "room-1", "janus")

    async def reconcile() -> records.JanusRecord:
        got = await store.get(skey)
        view: dict[str, Any] = {"meta": META, "livemeta": live("janus-u1"), "mixer": mixer()}
        if got is not None:
            view["janus"] = got.record
        await reconciler.reconcile(Target("rooms", "room-1"), view)
        found = await store.get(skey)
        assert found is not None
        rec: records.JanusRecord = found.record
        return rec

    first = await reconcile()
    assert first.status is records.JanusStatus.FORWARDING and first.forwarder_stream_id is not None
    # Janus restarts: every room and forwarder is gone
    bridge.rooms.clear()
    bridge.forwarders.clear()
    assert await reconciler.check_janus() == ["room-1"]
    rebuilt = await reconcile()
    assert rebuilt.janus_room_id == first.janus_room_id  # the previous id is tried first
    assert rebuilt.forwarder_stream_id not in (None, first.forwarder_stream_id)
    assert published == ["rtc.events.rooms.room-1.janus_restarted"]


class _FlakyChecks:
    """check_janus that fails with a bug once, then works."""

    def __init__(self) -> None:
        self.calls = 0

    async def check_janus(self) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            raise KeyError("janus reply without 'list'")  # not an AppError: ended the loop before
        return []


async def test_the_restart_monitor_survives_an_unexpected_error() -> None:
    gate = asyncio.Event()
    delays: list[float] = []

    async def sleep(delay_s: float) -> None:
        delays.append(delay_s)
        await gate.wait()

    async def settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    checks = _FlakyChecks()
    monitor = JanusMonitor(
        cast(RoomReconciler, checks), interval_s=3600, is_connected=lambda: True, sleep=sleep
    )
    async with monitor:
        assert monitor.is_running
        monitor.wake()
        await settle()
        assert checks.calls == 1 and not monitor.is_running  # /health: monitor false
        assert delays == [0.1]
        gate.set()
        await settle()
        assert monitor.is_running and monitor.restarts == 1
        monitor.wake()
        await settle()
        assert checks.calls == 2 and monitor.checks == 1 and monitor.is_running
    assert not monitor.is_running
