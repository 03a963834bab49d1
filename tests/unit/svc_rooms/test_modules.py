"""The module view: health, pickable, evacuation reasons, the drained label; no I/O."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.keys import Collection
from common.records import (
    Heartbeat,
    LiveMeta,
    LiveStatus,
    Mark,
    MarkLabel,
    MigrationReason,
    ModuleStatus,
)
from svc_rooms.modules import Absences, assigned_counts, module_states

AT = datetime(2026, 1, 1, tzinfo=UTC)


class Source:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str, str], Any] = {}

    def get(self, collection: str, id_: str, kind: str) -> Any | None:
        return self.data.get((collection, id_, kind))

    def items(self, collection: str, kind: str) -> Iterator[tuple[str, Any]]:
        for (c, i, k), v in sorted(self.data.items()):
            if c == collection and k == kind:
                yield i, v


def _hb(capacity: int = 2, status: ModuleStatus = ModuleStatus.HEALTHY) -> Heartbeat:
    return Heartbeat(status=status, host="h", capacity=capacity, streams=0, started_at=AT)


def _room(janus: str, mixer: str, status: LiveStatus = LiveStatus.ONAIR) -> LiveMeta:
    if status is LiveStatus.REMOVING:
        return LiveMeta(status=status, janus_id="", mixer_id="", nonce="", created_at=AT, discard_at=AT)
    return LiveMeta(status=status, janus_id=janus, mixer_id=mixer, nonce="n", created_at=AT)


def _state(src: Source, module_id: str) -> Any:
    return {m.id: m for m in module_states(src, Collection.MIXERS)}[module_id]


def test_counts_only_onair_rooms() -> None:
    src = Source()
    src.data[("rooms", "r1", "livemeta")] = _room("janus-1", "mixer-1")
    src.data[("rooms", "r2", "livemeta")] = _room("janus-1", "mixer-2")
    src.data[("rooms", "r3", "livemeta")] = _room("", "", LiveStatus.REMOVING)
    assert assigned_counts(src) == {
        ("januses", "janus-1"): 2,
        ("mixers", "mixer-1"): 1,
        ("mixers", "mixer-2"): 1,
    }


@pytest.mark.parametrize(
    ("heartbeat", "label", "rooms", "pickable"),
    [
        (_hb(2), None, 0, True),
        (_hb(2), MarkLabel.READY, 1, True),
        (_hb(2), None, 2, False),  # full
        (_hb(0), None, 0, False),  # no capacity
        (_hb(2, ModuleStatus.UNHEALTHY), None, 0, False),
        (None, None, 0, False),  # dead
        (_hb(2), MarkLabel.CORDON, 0, False),
        (_hb(2), MarkLabel.DRAINING, 0, False),
        (_hb(2), MarkLabel.DRAINED, 0, False),
        (_hb(2), MarkLabel.UNREADY, 0, False),
    ],
)
def test_pickable(heartbeat: Heartbeat | None, label: MarkLabel | None, rooms: int, pickable: bool) -> None:
    src = Source()
    if heartbeat is not None:
        src.data[("mixers", "mixer-1", "heartbeat")] = heartbeat
    if label is not None:
        src.data[("mixers", "mixer-1", "mark")] = Mark(label=label)
    for i in range(rooms):
        src.data[("rooms", f"r{i}", "livemeta")] = _room("janus-1", "mixer-1")
    if heartbeat is None and label is None and rooms == 0:
        src.data[("mixers", "mixer-1", "mark")] = Mark(label=MarkLabel.READY)  # make it known
    assert _state(src, "mixer-1").is_pickable is pickable


@pytest.mark.parametrize(
    ("heartbeat", "label", "reason"),
    [
        (_hb(), None, None),
        (_hb(), MarkLabel.READY, None),
        (_hb(), MarkLabel.CORDON, None),
        (_hb(), MarkLabel.DRAINING, MigrationReason.DRAINING),
        (_hb(), MarkLabel.DRAINED, MigrationReason.DRAINING),
        (_hb(), MarkLabel.UNREADY, MigrationReason.UNREADY),
        (_hb(status=ModuleStatus.UNHEALTHY), None, MigrationReason.UNREADY),
        (None, MarkLabel.CORDON, MigrationReason.LEASE_EXPIRED),
    ],
)
def test_evacuate_reason(
    heartbeat: Heartbeat | None, label: MarkLabel | None, reason: MigrationReason | None
) -> None:
    src = Source()
    if heartbeat is not None:
        src.data[("mixers", "mixer-1", "heartbeat")] = heartbeat
    if label is not None:
        src.data[("mixers", "mixer-1", "mark")] = Mark(label=label)
    assert _state(src, "mixer-1").evacuate_reason is reason


def test_draining_without_rooms_shows_drained() -> None:
    src = Source()
    src.data[("mixers", "mixer-1", "heartbeat")] = _hb()
    src.data[("mixers", "mixer-1", "mark")] = Mark(label=MarkLabel.DRAINING)
    src.data[("rooms", "r1", "livemeta")] = _room("janus-1", "mixer-1")
    assert _state(src, "mixer-1").shown_label is MarkLabel.DRAINING
    del src.data[("rooms", "r1", "livemeta")]
    assert _state(src, "mixer-1").shown_label is MarkLabel.DRAINED


def test_modules_known_from_rooms_only_are_listed_dead() -> None:
    src = Source()
    src.data[("rooms", "r1", "livemeta")] = _room("j-gone", "m-gone")
    states = module_states(src)
    assert [(m.collection.value, m.id, m.assigned, m.is_healthy) for m in states] == [
        ("januses", "j-gone", 1, False),
        ("mixers", "m-gone", 1, False),
    ]


def test_absence_grace_counts_from_first_sight_and_ends() -> None:
    absences = Absences(15.0)
    assert absences.grace_left_s("mixers", "m1", present=False, now=AT) == 15.0
    assert absences.missing_since("mixers", "m1") == AT
    # seen missing again later: the grace still counts from the first sight
    assert absences.grace_left_s("mixers", "m1", present=False, now=AT + timedelta(seconds=10)) == 5.0
    assert absences.grace_left_s("mixers", "m1", present=False, now=AT + timedelta(seconds=15)) == 0.0
    assert absences.grace_left_s("mixers", "m1", present=False, now=AT + timedelta(seconds=99)) == 0.0


def test_absence_forgotten_when_the_heartbeat_returns() -> None:
    absences = Absences(15.0)
    absences.grace_left_s("mixers", "m1", present=False, now=AT)
    assert absences.grace_left_s("mixers", "m1", present=True, now=AT + timedelta(seconds=10)) == 0.0
    assert absences.missing_since("mixers", "m1") is None
    # gone again: a whole new grace from then
    again = AT + timedelta(seconds=12)
    assert absences.grace_left_s("mixers", "m1", present=False, now=again) == 15.0
    assert absences.grace_left_s("mixers", "m1", present=False, now=again + timedelta(seconds=14)) == 1.0


def test_absences_are_per_module_and_collection() -> None:
    absences = Absences(15.0)
    absences.grace_left_s("mixers", "m1", present=False, now=AT)
    later = AT + timedelta(seconds=10)
    assert absences.grace_left_s("januses", "m1", present=False, now=later) == 15.0
    assert absences.grace_left_s("mixers", "m2", present=False, now=later) == 15.0
    absences.forget("mixers", "m1")
    assert absences.missing_since("mixers", "m1") is None
    assert absences.missing_since("januses", "m1") == later


def test_zero_grace_is_no_grace() -> None:
    assert Absences(0.0).grace_left_s("mixers", "m1", present=False, now=AT) == 0.0


def test_marked_away() -> None:
    src = Source()
    src.data[("mixers", "mixer-1", "mark")] = Mark(label=MarkLabel.DRAINING)
    src.data[("mixers", "mixer-2", "mark")] = Mark(label=MarkLabel.CORDON)
    assert _state(src, "mixer-1").is_marked_away
    assert not _state(src, "mixer-2").is_marked_away
