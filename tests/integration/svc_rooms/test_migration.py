"""Room migration: a dead, draining or unready module's rooms move; cordon keeps them; a module
back within the grace period keeps its rooms."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest

from common.bus import Bus
from common.contracts import validate_payload
from common.errors import Unavailable
from common.keys import Collection
from common.records import LiveStatus, RoomMigrated, decode_payload
from svc_rooms.app import Rooms, running
from svc_rooms.config import Config
from svc_rooms.service import Clock, utc_now
from tests.integration.eventcore import eventually
from tests.integration.svc_rooms.fakes import AUTH, FakeClock, FakeModule, StartModule

MIGRATED = "rtc.events.rooms.*.migrated"
ROOMS = ["mig-1", "mig-2", "mig-3"]
ON_A = {r: ("mixer-a", 0) for r in ROOMS}
ON_B = {r: ("mixer-b", 1) for r in ROOMS}
GRACE_S = 15.0  # MODULE_GRACE_PERIOD's default, which the fixtures keep


@pytest.fixture
async def migrated(bus: Bus) -> AsyncIterator[list[dict[str, Any]]]:
    """Every migrated event published from now on, as (validated) JSON."""
    got: list[dict[str, Any]] = []

    async def on_msg(msg: Any) -> None:
        validate_payload(msg.subject, msg.data)
        got.append({"subject": msg.subject, **json.loads(msg.data)})
        await msg.ack()

    sub = await bus.js.subscribe(MIGRATED, cb=on_msg, stream="RTC_EVENTS")
    try:
        yield got
    finally:
        await sub.unsubscribe()


async def _seen(rooms: Rooms, collection: str, ids: set[str]) -> None:
    def check() -> bool:
        return {m.id for m in rooms.service.resources.modules(Collection(collection)) if m.heartbeat} >= ids

    await eventually(check, 5, f"{collection} {sorted(ids)} in the cache")


async def _mark(client: httpx.AsyncClient, module: str, label: str | None) -> None:
    if label is None:
        r = await client.delete(f"/api/modules/{module}/mark", headers=AUTH)
    else:
        r = await client.put(f"/api/modules/{module}/mark", json={"label": label}, headers=AUTH)
    assert r.status_code == 200


async def _create_on(rooms: Rooms, client: httpx.AsyncClient, ids: list[str]) -> None:
    for room_id in ids:
        r = await client.post("/api/rooms", json={"roomId": room_id})
        assert r.status_code == 201, r.text


async def _mixers(rooms: Rooms) -> dict[str, tuple[str, int]]:
    out = {}
    for room_id, room in (await rooms.store.read_all()).items():
        assert room.livemeta is not None
        live = room.livemeta.record
        assert live.status is LiveStatus.ONAIR
        out[room_id] = (live.mixer_id, live.generation)
    return out


async def _rooms_on_mixer_a(rooms: Rooms, client: httpx.AsyncClient, modules: StartModule) -> FakeModule:
    """janus-1 and mixers mixer-a (TTL 2 s) / mixer-b; three rooms all on mixer-a."""
    await modules("januses", "janus-1", capacity=100)
    mixer_a = await modules("mixers", "mixer-a", capacity=10, ttl_s=2)
    await modules("mixers", "mixer-b", capacity=10)
    await _seen(rooms, "mixers", {"mixer-a", "mixer-b"})
    await _seen(rooms, "januses", {"janus-1"})
    await _mark(client, "mixers/mixer-b", "cordon")
    await eventually(
        lambda: [m.id for m in rooms.service.resources.candidates(Collection.MIXERS)] == ["mixer-a"],
        5,
        "cordon seen",
    )
    await _create_on(rooms, client, ROOMS)
    await _mark(client, "mixers/mixer-b", None)
    await eventually(
        lambda: len(rooms.service.resources.candidates(Collection.MIXERS)) == 2, 5, "unmark seen"
    )
    assert await _mixers(rooms) == ON_A
    return mixer_a


@pytest.fixture
async def two_mixers(rooms: Rooms, client: httpx.AsyncClient, modules: StartModule) -> FakeModule:
    return await _rooms_on_mixer_a(rooms, client, modules)


async def _gone(rooms: Rooms, module_id: str, timeout_s: float = 5) -> None:
    """Wait until svc_rooms has seen mixer ``module_id``'s heartbeat go (its grace started)."""
    await eventually(
        lambda: rooms.reconciler.absences.missing_since(Collection.MIXERS, module_id) is not None,
        timeout_s,
        f"{module_id}'s heartbeat seen gone",
    )


@contextlib.asynccontextmanager
async def _instance(config: Config, clock: Clock) -> AsyncIterator[tuple[Rooms, httpx.AsyncClient]]:
    """One more svc_rooms process (a restart is: leave this block, enter another)."""
    async with (
        running(config, clock=clock, run_housekeeping=False) as rooms,
        httpx.AsyncClient(base_url=rooms.url, headers=AUTH, timeout=10.0) as client,
    ):
        yield rooms, client


async def test_lease_expiry_moves_rooms_after_the_grace_and_publishes_migrated(
    rooms: Rooms, clock: FakeClock, two_mixers: FakeModule, migrated: list[dict[str, Any]]
) -> None:
    await two_mixers.crash()
    await _gone(rooms, "mixer-a", two_mixers.ttl_s + 5)
    await rooms.housekeeper.run_once()  # every onair room looked at: all in mixer-a's grace
    clock.advance(GRACE_S - 1)
    await rooms.housekeeper.run_once()
    await asyncio.sleep(0.3)
    assert await _mixers(rooms) == ON_A
    clock.advance(1)
    started = time.monotonic()
    await rooms.housekeeper.run_once()  # stands in for the deferred run the scheduler holds

    async def moved() -> bool:
        return await _mixers(rooms) == ON_B

    await eventually(moved, 5, "rooms on mixer-b")
    assert time.monotonic() - started <= 2
    await eventually(lambda: len(migrated) >= 3, 5, "three migrated events")
    await asyncio.sleep(0.3)  # a duplicate would arrive now
    assert sorted(e["roomId"] for e in migrated) == ROOMS
    for event in migrated:
        assert event["subject"] == f"rtc.events.rooms.{event['roomId']}.migrated"
        assert (event["kind"], event["from"], event["to"]) == ("mixer", "mixer-a", "mixer-b")
        assert (event["reason"], event["generation"]) == ("lease_expired", 1)
        decode_payload(RoomMigrated, {k: v for k, v in event.items() if k != "subject"})
    slots = await rooms.store.read_all_slots()
    assert {(s.collection.value, s.module_id) for s in slots} == {
        ("mixers", "mixer-b"),
        ("januses", "janus-1"),
    }


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
async def test_a_module_back_within_the_grace_keeps_its_rooms(
    rooms: Rooms,
    clock: FakeClock,
    two_mixers: FakeModule,
    modules: StartModule,
    migrated: list[dict[str, Any]],
    how: str,
) -> None:
    """SIGTERM revokes the lease (the heartbeat goes at once), kill -9 lets it expire."""
    await (two_mixers.stop() if how == "sigterm" else two_mixers.crash())
    await _gone(rooms, "mixer-a", two_mixers.ttl_s + 5)
    clock.advance(GRACE_S - 1)
    await rooms.housekeeper.run_once()
    await modules("mixers", "mixer-a", capacity=10, ttl_s=2)  # the restarted process
    await eventually(
        lambda: rooms.reconciler.absences.missing_since(Collection.MIXERS, "mixer-a") is None,
        5,
        "mixer-a's return seen",
    )
    clock.advance(GRACE_S)  # long past the grace: the deferred runs find nothing to do
    await rooms.housekeeper.run_once()
    await asyncio.sleep(0.5)
    assert await _mixers(rooms) == ON_A  # same module, generation unchanged
    assert migrated == []


async def test_the_grace_ends_by_itself(
    rooms_config: Config, modules: StartModule, migrated: list[dict[str, Any]]
) -> None:
    """On the real clock, no housekeeping: the scheduler's deferred run moves the rooms."""
    config = attrs.evolve(rooms_config, module_grace_period_s=1.0)
    async with _instance(config, utc_now) as (rooms, client):
        mixer_a = await _rooms_on_mixer_a(rooms, client, modules)
        await mixer_a.stop()
        gone_at = time.monotonic()

        async def moved() -> bool:
            return await _mixers(rooms) == ON_B

        await eventually(moved, 5, "rooms on mixer-b")
        assert 1.0 <= time.monotonic() - gone_at <= 3.0
        await eventually(lambda: len(migrated) == 3, 5, "three migrated events")


async def test_a_restart_of_svc_rooms_does_not_cut_the_grace_short(
    rooms_config: Config, clock: FakeClock, modules: StartModule, migrated: list[dict[str, Any]]
) -> None:
    """etcd does not say when a heartbeat went: a new svc_rooms starts the grace when it starts."""
    async with _instance(rooms_config, clock) as (rooms, client):
        mixer_a = await _rooms_on_mixer_a(rooms, client, modules)
        await mixer_a.stop()
        await _gone(rooms, "mixer-a")
        clock.advance(GRACE_S - 1)
    clock.advance(GRACE_S)  # svc_rooms was away; the old grace would be long over
    async with _instance(rooms_config, clock) as (rooms, client):
        await _gone(rooms, "mixer-a")  # its first look started a new grace
        await rooms.housekeeper.run_once()
        await asyncio.sleep(0.5)
        assert await _mixers(rooms) == ON_A
        clock.advance(GRACE_S)
        await rooms.housekeeper.run_once()

        async def moved() -> bool:
            return await _mixers(rooms) == ON_B

        await eventually(moved, 5, "rooms on mixer-b")
        await eventually(lambda: len(migrated) == 3, 5, "three migrated events")


async def test_draining_moves_rooms_then_shows_drained(
    rooms: Rooms, client: httpx.AsyncClient, two_mixers: Any, migrated: list[dict[str, Any]]
) -> None:
    await _mark(client, "mixers/mixer-a", "draining")

    async def moved() -> bool:
        return {m for m, _ in (await _mixers(rooms)).values()} == {"mixer-b"}

    await eventually(moved, 5, "rooms drained to mixer-b")
    await eventually(lambda: len(migrated) == 3, 5, "three migrated events")
    assert {e["reason"] for e in migrated} == {"draining"}
    r = await client.get("/api/modules", headers=AUTH)
    listed = {m["id"]: m for m in r.json()["modules"]}
    assert listed["mixer-a"]["label"] == "drained" and listed["mixer-a"]["load"]["assigned"] == 0
    assert listed["mixer-b"]["load"]["assigned"] == 3


async def test_cordon_keeps_rooms(
    rooms: Rooms, client: httpx.AsyncClient, two_mixers: Any, migrated: list[dict[str, Any]]
) -> None:
    await _mark(client, "mixers/mixer-a", "cordon")
    await eventually(
        lambda: [m.id for m in rooms.service.resources.candidates(Collection.MIXERS)] == ["mixer-b"],
        5,
        "cordon seen",
    )
    await rooms.housekeeper.run_once()  # enqueues every onair room for a migration check
    await asyncio.sleep(1.0)
    assert {m for m, _ in (await _mixers(rooms)).values()} == {"mixer-a"}
    assert migrated == []
    r = await client.post("/api/rooms", json={"roomId": "after-cordon"})
    assert r.json()["room"]["mixerId"] == "mixer-b"


async def test_no_other_module_keeps_the_room_onair_until_one_appears(
    rooms: Rooms,
    clock: FakeClock,
    client: httpx.AsyncClient,
    modules: StartModule,
    migrated: list[dict[str, Any]],
) -> None:
    await modules("januses", "janus-1", capacity=10)
    only = await modules("mixers", "mixer-only", capacity=10, ttl_s=2)
    await _seen(rooms, "mixers", {"mixer-only"})
    await _seen(rooms, "januses", {"janus-1"})
    await _create_on(rooms, client, ["stay-1"])
    await only.crash()
    await _gone(rooms, "mixer-only", 8)
    clock.advance(GRACE_S)
    await rooms.housekeeper.run_once()
    await asyncio.sleep(1.0)
    assert await _mixers(rooms) == {"stay-1": ("mixer-only", 0)}
    assert (await client.get("/api/rooms/stay-1")).json()["room"]["mixer"]["healthy"] is False
    await modules("mixers", "mixer-new", capacity=10)

    async def moved() -> bool:
        return await _mixers(rooms) == {"stay-1": ("mixer-new", 1)}

    await eventually(moved, 5, "room moved to the new mixer")
    await eventually(lambda: len(migrated) == 1, 5, "one migrated event")


@pytest.mark.parametrize("crash", ["before_publish", "before_delete"])
async def test_a_migration_cut_short_after_its_commit_is_published_once_after_a_restart(
    rooms_config: Config,
    clock: FakeClock,
    modules: StartModule,
    bus: Bus,
    migrated: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    crash: str,
) -> None:
    """The migrated event is committed with the move (outbox) and survives the process."""
    async with _instance(rooms_config, clock) as (rooms, client):
        mixer_a = await _rooms_on_mixer_a(rooms, client, modules)
        cut = 0

        async def cut_short(*args: Any, **kwargs: Any) -> None:
            nonlocal cut
            cut += 1
            raise Unavailable("simulated crash")

        # before_publish: the process dies right after the commit; before_delete: right after
        # JetStream took the event, before its outbox key went (the restart publishes it again)
        monkeypatch.setattr(
            rooms.store, "publish_event" if crash == "before_publish" else "delete_outbox", cut_short
        )
        await mixer_a.stop()
        await _gone(rooms, "mixer-a")
        clock.advance(GRACE_S)
        await rooms.housekeeper.run_once()

        async def moved() -> bool:
            return await _mixers(rooms) == ON_B

        await eventually(moved, 5, "rooms on mixer-b")
        await eventually(lambda: cut >= 3, 5, "every room's run cut short")
        assert len(await rooms.store.read_outbox()) == 3
    monkeypatch.undo()
    assert len(migrated) == (0 if crash == "before_publish" else 3)
    async with _instance(rooms_config, clock) as (rooms, _):

        async def outbox_empty() -> bool:
            return await rooms.store.read_outbox() == []

        await eventually(outbox_empty, 5, "the outbox published and emptied")
        await eventually(lambda: len(migrated) >= 3, 5, "three migrated events")
        await asyncio.sleep(0.3)  # a duplicate would arrive now
    assert sorted(e["roomId"] for e in migrated) == ROOMS
    assert {(e["from"], e["to"], e["generation"]) for e in migrated} == {("mixer-a", "mixer-b", 1)}
    info = await bus.js.stream_info("RTC_EVENTS", subjects_filter=MIGRATED)
    assert info.state.subjects == {f"rtc.events.rooms.{r}.migrated": 1 for r in ROOMS}
