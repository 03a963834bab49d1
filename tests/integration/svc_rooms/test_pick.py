"""The resource manager: which modules are picked, and capacity held under concurrent creates."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from common.keys import Collection
from common.records import LiveStatus, ModuleStatus
from svc_rooms.app import Rooms
from tests.integration.eventcore import eventually
from tests.integration.svc_rooms.fakes import AUTH, StartModule


async def _seen(rooms: Rooms, collection: str, ids: set[str]) -> None:
    def check() -> bool:
        return {m.id for m in rooms.service.resources.modules(Collection(collection)) if m.heartbeat} >= ids

    await eventually(check, 5, f"{collection} {sorted(ids)} in the cache")


async def _assignments(rooms: Rooms) -> Counter[str]:
    counts: Counter[str] = Counter()
    for room in (await rooms.store.read_all()).values():
        if room.livemeta is not None and room.livemeta.record.status is LiveStatus.ONAIR:
            counts[f"januses/{room.livemeta.record.janus_id}"] += 1
            counts[f"mixers/{room.livemeta.record.mixer_id}"] += 1
    return counts


async def test_capacity_is_respected_and_zero_capacity_excluded(
    rooms: Rooms, client: httpx.AsyncClient, modules: StartModule
) -> None:
    await modules("januses", "janus-1", capacity=100)
    await modules("mixers", "mixer-small", capacity=2)
    await modules("mixers", "mixer-zero", capacity=0)
    await _seen(rooms, "mixers", {"mixer-small", "mixer-zero"})
    await _seen(rooms, "januses", {"janus-1"})
    codes = [(await client.post("/api/rooms", content=b"{}")).status_code for _ in range(3)]
    assert codes == [201, 201, 503]
    assert await _assignments(rooms) == Counter({"januses/janus-1": 2, "mixers/mixer-small": 2})


@pytest.mark.parametrize("label", ["cordon", "draining", "drained", "unready"])
async def test_labels_other_than_ready_exclude(
    rooms: Rooms, client: httpx.AsyncClient, modules: StartModule, label: str
) -> None:
    await modules("januses", "janus-1", capacity=10)
    await modules("mixers", "mixer-a", capacity=10)
    await modules("mixers", "mixer-b", capacity=10)
    await _seen(rooms, "mixers", {"mixer-a", "mixer-b"})
    await _seen(rooms, "januses", {"janus-1"})
    await client.put("/api/modules/mixers/mixer-a/mark", json={"label": "ready"}, headers=AUTH)
    await client.put("/api/modules/mixers/mixer-b/mark", json={"label": label}, headers=AUTH)
    await eventually(
        lambda: [m.id for m in rooms.service.resources.candidates(Collection.MIXERS)] == ["mixer-a"],
        5,
        "only mixer-a pickable",
    )
    for _ in range(6):
        assert (await client.post("/api/rooms", content=b"{}")).status_code == 201
    assert (await _assignments(rooms))["mixers/mixer-a"] == 6


async def test_unhealthy_and_dead_modules_are_excluded(
    rooms: Rooms, client: httpx.AsyncClient, modules: StartModule
) -> None:
    await modules("januses", "janus-1", capacity=10)
    await modules("mixers", "mixer-sick", capacity=10, status=ModuleStatus.UNHEALTHY)
    dead = await modules("mixers", "mixer-dead", capacity=10)
    await _seen(rooms, "mixers", {"mixer-sick", "mixer-dead"})
    await _seen(rooms, "januses", {"janus-1"})
    await dead.stop()
    await eventually(
        lambda: not rooms.service.resources.candidates(Collection.MIXERS), 5, "no mixer pickable"
    )
    r = await client.post("/api/rooms", content=b"{}")
    assert r.status_code == 503 and r.json()["error"] == "no available mixer"
    await modules("mixers", "mixer-ok", capacity=10)
    await _seen(rooms, "mixers", {"mixer-ok"})
    r = await client.post("/api/rooms", content=b"{}")
    assert r.status_code == 201 and r.json()["room"]["mixerId"] == "mixer-ok"


async def test_picks_spread_over_modules(
    rooms: Rooms, client: httpx.AsyncClient, modules: StartModule
) -> None:
    await modules("januses", "janus-1", capacity=100)
    await modules("mixers", "mixer-a", capacity=100)
    await modules("mixers", "mixer-b", capacity=100)
    await _seen(rooms, "mixers", {"mixer-a", "mixer-b"})
    await _seen(rooms, "januses", {"janus-1"})
    for _ in range(30):
        assert (await client.post("/api/rooms", content=b"{}")).status_code == 201
    counts = await _assignments(rooms)
    # Uniform choice: both get some (P(all 30 on one) = 2^-29).
    assert counts["mixers/mixer-a"] > 0 and counts["mixers/mixer-b"] > 0


async def test_concurrent_creates_never_overfill(
    rooms: Rooms, client: httpx.AsyncClient, modules: StartModule
) -> None:
    await modules("januses", "janus-1", capacity=10)
    await modules("januses", "janus-2", capacity=10)
    await modules("mixers", "mixer-1", capacity=10)
    await modules("mixers", "mixer-2", capacity=10)
    await _seen(rooms, "mixers", {"mixer-1", "mixer-2"})
    await _seen(rooms, "januses", {"janus-1", "janus-2"})
    async with httpx.AsyncClient(
        base_url=rooms.url, headers=AUTH, timeout=30.0, limits=httpx.Limits(max_connections=50)
    ) as c:
        responses = await asyncio.gather(*(c.post("/api/rooms", content=b"{}") for _ in range(50)))
    codes = Counter(r.status_code for r in responses)
    assert codes == Counter({201: 20, 503: 30}), [
        r.text for r in responses if r.status_code not in (201, 503)
    ]
    for r in responses:
        if r.status_code == 503:
            assert r.json()["success"] is False and r.json()["error"] in (
                "no available mixer",
                "no available Janus server",
            )
    counts = await _assignments(rooms)
    assert sum(v for k, v in counts.items() if k.startswith("mixers/")) == 20
    assert all(v <= 10 for v in counts.values()), counts
    all_rooms = await rooms.store.read_all()
    assert len(all_rooms) == 20 and all(
        r.meta is not None and r.livemeta is not None for r in all_rooms.values()
    )
    slots = await rooms.store.read_all_slots()
    assert len(slots) == 40 and len({(s.collection, s.module_id, s.index) for s in slots}) == 40
