"""Which rooms are assigned here and where they forward (pure rules of svc_janus.reconcile)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from common import records
from svc_janus.reconcile import _forward_to, _same, is_assigned

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
