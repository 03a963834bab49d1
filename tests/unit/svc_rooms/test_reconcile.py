"""The module grace rule of the room reconciler on a fake clock; no I/O (the migration itself is
tested on real etcd and NATS in tests/integration/svc_rooms/test_migration.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.errors import Unavailable
from common.keys import StateKey
from common.reconcile import StateCache, Target
from common.records import Heartbeat, LiveMeta, LiveStatus, Mark, MarkLabel, ModuleStatus
from svc_rooms.reconcile import RoomReconciler

AT = datetime(2026, 1, 1, tzinfo=UTC)
ROOM = Target("rooms", "room-1")
MIXER_A = Target("mixers", "mixer-a")


class Clock:
    def __init__(self) -> None:
        self.now = AT

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Resources:
    """Records migration attempts; no module is ever free, so an attempt ends in Unavailable."""

    def __init__(self) -> None:
        self.picks: list[tuple[str, set[str]]] = []

    async def pick_slot(self, collection: str, *, exclude: set[str]) -> None:
        self.picks.append((str(collection), exclude))


class Harness:
    def __init__(self, grace_s: float = 15.0) -> None:
        self.cache = StateCache()
        self.clock = Clock()
        self.resources = Resources()
        self.enqueued: list[tuple[Target, float]] = []
        self.revision = 0
        self.reconciler = RoomReconciler(
            None,  # type: ignore[arg-type]  # the grace rule never reaches the store
            self.resources,  # type: ignore[arg-type]
            self.cache,
            lambda target, delay_s: self.enqueued.append((target, delay_s)),
            grace_s=grace_s,
            clock=self.clock,
        )
        for janus_or_mixer in (("januses", "janus-1"), ("mixers", "mixer-a"), ("mixers", "mixer-b")):
            self.heartbeat(*janus_or_mixer)
        self.put(
            StateKey("rooms", "room-1", "livemeta"),
            LiveMeta(
                status=LiveStatus.ONAIR, janus_id="janus-1", mixer_id="mixer-a", nonce="n", created_at=AT
            ),
        )

    def put(self, skey: StateKey, record: Any) -> None:
        self.revision += 1
        assert self.cache.apply_put(skey, record, self.revision)

    def heartbeat(self, collection: str, module_id: str) -> None:
        hb = Heartbeat(status=ModuleStatus.HEALTHY, host="h", capacity=10, streams=0, started_at=AT)
        self.put(StateKey(collection, module_id, "heartbeat"), hb)

    def lose(self, collection: str, module_id: str) -> None:
        self.revision += 1
        assert self.cache.apply_delete(StateKey(collection, module_id, "heartbeat"), self.revision)

    async def run(self, target: Target) -> list[tuple[Target, float]]:
        """One reconcile of ``target``; what it enqueued."""
        self.enqueued.clear()
        await self.reconciler.reconcile(target, self.cache.view(target))
        return list(self.enqueued)


async def test_a_module_back_within_the_grace_keeps_its_rooms() -> None:
    h = Harness()
    h.lose("mixers", "mixer-a")
    assert await h.run(MIXER_A) == [(ROOM, 0.0)]  # the delete event: the room waits out the grace
    (deferred,) = await h.run(ROOM)
    assert deferred[0] == ROOM and 15.0 <= deferred[1] <= 15.1
    h.clock.advance(10)
    (deferred,) = await h.run(ROOM)  # an early run (another event) defers again, to the same end
    assert 5.0 <= deferred[1] <= 5.1
    h.heartbeat("mixers", "mixer-a")
    assert await h.run(MIXER_A) == []
    h.clock.advance(10)  # the deferred run comes after the grace: nothing to do
    assert await h.run(ROOM) == []
    assert h.resources.picks == []


async def test_a_module_away_past_the_grace_loses_its_rooms() -> None:
    h = Harness()
    h.lose("mixers", "mixer-a")
    await h.run(MIXER_A)
    h.clock.advance(14.9)
    await h.run(ROOM)
    assert h.resources.picks == []
    h.clock.advance(0.1)
    with pytest.raises(Unavailable):  # the migration is tried (this fake has no free module)
        await h.run(ROOM)
    assert h.resources.picks == [("mixers", {"mixer-a"})]


async def test_a_new_absence_gets_a_whole_grace() -> None:
    h = Harness()
    h.lose("mixers", "mixer-a")
    await h.run(MIXER_A)
    h.clock.advance(14)
    h.heartbeat("mixers", "mixer-a")
    await h.run(MIXER_A)
    h.clock.advance(1)
    h.lose("mixers", "mixer-a")
    await h.run(MIXER_A)
    h.clock.advance(14)
    (deferred,) = await h.run(ROOM)
    assert 1.0 <= deferred[1] <= 1.1
    assert h.resources.picks == []


async def test_first_sight_after_a_restart_starts_the_grace() -> None:
    # A new svc_rooms process whose first snapshot has no heartbeat for mixer-a: it cannot know
    # when the heartbeat went, so the grace starts now (never cut short by a restart).
    h = Harness()
    h.lose("mixers", "mixer-a")
    h.clock.advance(3600)
    (deferred,) = await h.run(ROOM)
    assert 15.0 <= deferred[1] <= 15.1
    assert h.resources.picks == []


async def test_a_mark_moves_rooms_without_grace() -> None:
    h = Harness()
    h.lose("mixers", "mixer-a")
    h.put(StateKey("mixers", "mixer-a", "mark"), Mark(label=MarkLabel.DRAINING))
    with pytest.raises(Unavailable):
        await h.run(ROOM)
    assert h.resources.picks == [("mixers", {"mixer-a"})]


async def test_unhealthy_moves_rooms_without_grace() -> None:
    h = Harness()
    hb = Heartbeat(status=ModuleStatus.UNHEALTHY, host="h", capacity=10, streams=0, started_at=AT)
    h.put(StateKey("mixers", "mixer-a", "heartbeat"), hb)
    with pytest.raises(Unavailable):
        await h.run(ROOM)


async def test_zero_grace_moves_at_once() -> None:
    h = Harness(grace_s=0.0)
    h.lose("mixers", "mixer-a")
    with pytest.raises(Unavailable):
        await h.run(ROOM)


async def test_a_module_without_rooms_is_not_tracked() -> None:
    h = Harness()
    h.lose("mixers", "mixer-b")
    assert await h.run(Target("mixers", "mixer-b")) == []
    assert h.reconciler.absences.missing_since("mixers", "mixer-b") is None
