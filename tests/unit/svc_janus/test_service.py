"""RoomService rules against an in-memory AudioBridge stand-in (no I/O)."""

from __future__ import annotations

import itertools
from typing import Any, cast

import pytest

from common.errors import Conflict, NotFound
from svc_janus.audiobridge import AudioBridge, Forwarder, RoomInfo
from svc_janus.service import (
    CREATE_ATTEMPTS,
    ROOM_NUMBER_MAX,
    ROOM_NUMBER_MIN,
    RoomService,
    Wanted,
    random_room_number,
    room_secret,
)


class FakeBridge:
    """Rooms and forwarders in dicts; records every call in order."""

    def __init__(self) -> None:
        self.rooms: dict[int, dict[str, Any]] = {}
        self.forwarders: dict[int, list[Forwarder]] = {}
        self.calls: list[tuple[str, int]] = []
        self.taken: set[int] = set()
        self.next_stream = 1

    async def create_audiobridge_room(
        self, room: int, *, description: str, secret: str, pin: str = "", **_: Any
    ) -> None:
        self.calls.append(("create", room))
        if room in self.rooms or room in self.taken:
            raise Conflict("exists")
        self.rooms[room] = {"description": description, "secret": secret, "pin": pin}
        self.forwarders[room] = []

    async def edit_pin(self, room: int, *, secret: str, pin: str) -> None:
        self.calls.append(("edit", room))
        self.rooms[room]["pin"] = pin

    async def destroy_audiobridge_room(self, room: int, *, secret: str) -> None:
        self.calls.append(("destroy", room))
        if room not in self.rooms:
            raise NotFound("no such room")
        del self.rooms[room]
        del self.forwarders[room]

    async def list_audiobridge_rooms(self) -> list[RoomInfo]:
        return [
            RoomInfo(room=n, description=r["description"], num_participants=0, pin_required=False)
            for n, r in self.rooms.items()
        ]

    async def rtp_forward(self, room: int, *, secret: str, host: str, port: int) -> Forwarder:
        self.calls.append(("forward", room))
        fw = Forwarder(stream_id=self.next_stream, host=host, port=port, ptype=111)
        self.next_stream += 1
        self.forwarders[room].append(fw)
        return fw

    async def stop_rtp_forward(self, room: int, *, secret: str, stream_id: int) -> None:
        self.calls.append(("stop", room))
        before = len(self.forwarders.get(room, []))
        self.forwarders[room] = [f for f in self.forwarders.get(room, []) if f.stream_id != stream_id]
        if len(self.forwarders[room]) == before:
            raise NotFound("no such forwarder")

    async def list_forwarders(self, room: int, *, secret: str) -> list[Forwarder]:
        return list(self.forwarders[room])


def make(bridge: FakeBridge) -> RoomService:
    return RoomService(cast(AudioBridge, bridge), janus_id="janus-u1", admin_secret="k")


def test_room_numbers_have_six_digits() -> None:
    numbers = {random_room_number() for _ in range(2000)}
    assert min(numbers) >= ROOM_NUMBER_MIN and max(numbers) <= ROOM_NUMBER_MAX == 999_999
    assert len(numbers) > 1900


def test_room_secret_is_derived_and_specific() -> None:
    s = room_secret("k", "janus-1", "room-1", 123456)
    assert s == room_secret("k", "janus-1", "room-1", 123456) and len(s) == 32
    assert (
        len(
            {
                s,
                room_secret("k", "janus-2", "room-1", 123456),
                room_secret("x", "janus-1", "room-1", 123456),
                room_secret("k", "janus-1", "room-2", 123456),
                room_secret("k", "janus-1", "room-1", 123457),
            }
        )
        == 5
    )


async def test_ensure_audiobridge_room_creates_once_and_keeps_the_pin_in_sync() -> None:
    bridge = FakeBridge()
    svc = make(bridge)
    held = await svc.ensure_audiobridge_room("room-1", pin="111111")
    assert bridge.rooms[held.janus_room_id] == {
        "description": "room-1",
        "secret": held.secret,
        "pin": "111111",
    }
    assert await svc.ensure_audiobridge_room("room-1", pin="111111") is held
    await svc.ensure_audiobridge_room("room-1", pin="222222")
    assert bridge.rooms[held.janus_room_id]["pin"] == "222222"
    assert [c[0] for c in bridge.calls] == ["create", "edit"]


async def test_collisions_retry_then_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    bridge = FakeBridge()
    numbers = itertools.cycle([200001, 200002, 200003, 200004, 200005])
    monkeypatch.setattr("svc_janus.service.random_room_number", lambda: next(numbers))
    bridge.taken = {200001, 200002}
    svc = make(bridge)
    held = await svc.ensure_audiobridge_room("room-1", pin="")
    assert held.janus_room_id == 200003
    bridge2 = FakeBridge()
    bridge2.taken = set(range(100000, 1000000))
    with pytest.raises(Conflict, match="after 5 attempts"):
        await make(bridge2).ensure_audiobridge_room("room-1", pin="")
    assert len(bridge2.calls) == CREATE_ATTEMPTS


async def test_preferred_id_is_tried_first() -> None:
    bridge = FakeBridge()
    held = await make(bridge).ensure_audiobridge_room("room-1", pin="", preferred_id=654321)
    assert held.janus_room_id == 654321


async def test_forwarder_follows_the_mixer_stop_before_create() -> None:
    bridge = FakeBridge()
    svc = make(bridge)
    held = await svc.ensure_audiobridge_room("room-1", pin="")
    n = held.janus_room_id
    await svc.ensure_forwarder("room-1", "127.0.0.1", 5000)
    await svc.ensure_forwarder("room-1", "127.0.0.1", 5000)
    await svc.ensure_forwarder("room-1", "127.0.0.1", 5002)
    assert bridge.calls[1:] == [("forward", n), ("stop", n), ("forward", n)]
    assert [(f.host, f.port) for f in bridge.forwarders[n]] == [("127.0.0.1", 5002)]


async def test_teardown_stops_forwarders_before_destroying_and_tolerates_gone_rooms() -> None:
    bridge = FakeBridge()
    svc = make(bridge)
    n = (await svc.ensure_audiobridge_room("room-1", pin="")).janus_room_id
    await svc.ensure_forwarder("room-1", "127.0.0.1", 5000)
    await svc.teardown_audiobridge_room("room-1")
    assert bridge.calls[-2:] == [("stop", n), ("destroy", n)]
    assert svc.held == {}
    n2 = (await svc.ensure_audiobridge_room("room-2", pin="")).janus_room_id
    del bridge.rooms[n2]  # Janus lost it already
    await svc.teardown_audiobridge_room("room-2")
    assert svc.held == {}


async def test_find_lost_reports_only_rooms_janus_no_longer_has() -> None:
    bridge = FakeBridge()
    svc = make(bridge)
    a = await svc.ensure_audiobridge_room("room-a", pin="")
    await svc.ensure_audiobridge_room("room-b", pin="")
    del bridge.rooms[a.janus_room_id]
    assert await svc.find_lost() == ["room-a"]
    assert set(svc.held) == {"room-b"}
    assert await svc.find_lost() == []


async def test_rebuild_adopts_dedups_and_removes_orphans() -> None:
    bridge = FakeBridge()
    svc = make(bridge)

    async def janus_room(room_id: str, number: int) -> None:
        await bridge.create_audiobridge_room(
            number, description=room_id, secret=svc.secret_for(room_id, number)
        )

    await janus_room("keep-1", 111111)
    await janus_room("keep-1", 222222)  # a duplicate (crash between create and record)
    await janus_room("orphan-1", 333333)
    await janus_room("fwd-1", 444444)
    await bridge.create_audiobridge_room(555555, description="not a room id!", secret="other")
    good = await bridge.rtp_forward(444444, secret="", host="127.0.0.1", port=6000)
    await bridge.rtp_forward(444444, secret="", host="127.0.0.1", port=6002)
    await svc.rebuild(
        {
            "keep-1": Wanted(janus_room_id=222222, forward_to=None),
            "fwd-1": Wanted(janus_room_id=None, forward_to=("127.0.0.1", 6000)),
            "new-1": Wanted(janus_room_id=None, forward_to=None),
        }
    )
    assert sorted(bridge.rooms) == [222222, 444444, 555555]
    assert {r: h.janus_room_id for r, h in svc.held.items()} == {"keep-1": 222222, "fwd-1": 444444}
    assert svc.held["fwd-1"].forwarder == good and bridge.forwarders[444444] == [good]
    assert svc.held["keep-1"].pin is None  # unknown: the next reconcile sets it
