"""svc_janus against real Janus, etcd and NATS: the room flow, rebuild after a manager restart,
the heartbeat and /health. State is written the way svc_rooms and svc_mixer write it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from common import records
from common.errors import Unauthorized
from common.keys import StateKey
from common.state import StateStore
from svc_janus.app import running
from svc_janus.config import Config
from svc_janus.janus_ws import JanusClient
from svc_janus.service import room_secret
from tests.integration.eventcore import eventually
from tests.integration.svc_janus.janus_helpers import (
    OpusReceiver,
    bridge_for,
    live_room,
    mixer_record,
    random_free_room,
    rooms_by_description,
    stop_room,
    unique_id,
)
from tests.servers_janus import JanusServer

pytestmark = pytest.mark.janus


async def _record(store: StateStore, room_id: str) -> records.JanusRecord | None:
    got = await store.get(StateKey("rooms", room_id, "janus"))
    return got.record if got is not None else None


def _secret(config: Config, room_id: str, number: int) -> str:
    return room_secret(config.admin_secret, config.janus_id, room_id, number)


async def test_room_flow(
    manager_config: Config, store: StateStore, janus_client: JanusClient, janus_server: JanusServer
) -> None:
    bridge = bridge_for(janus_client, janus_server)
    room_id = unique_id("flow")
    rx1, rx2 = OpusReceiver(), OpusReceiver()
    try:
        async with running(manager_config) as app:
            await live_room(store, room_id, janus_id=manager_config.janus_id, pin="pin123")

            async def created() -> records.JanusRecord | None:
                return await _record(store, room_id)

            await eventually(created, 10, "janus record")
            rec = await _record(store, room_id)
            assert rec is not None and rec.status is records.JanusStatus.ROOM_CREATED
            assert rec.janus_id == manager_config.janus_id and rec.generation == 1
            number = rec.janus_room_id
            assert number is not None and 100_000 <= number <= 999_999
            assert await rooms_by_description(bridge, room_id) == [number]
            # the pin is enforced for joins
            handle = await janus_client.attach()
            with pytest.raises(Unauthorized):
                await janus_client.message_async(
                    {"request": "join", "room": number, "pin": "nope00"}, handle_id=handle
                )
            joined = await janus_client.message_async(
                {"request": "join", "room": number, "pin": "pin123", "rtp": {"payload_type": 111}},
                handle_id=handle,
            )
            assert joined["audiobridge"] == "joined"
            await janus_client.detach(handle)
            secret = _secret(manager_config, room_id, number)

            # the mixer appears: one forwarder to its host/port
            await mixer_record(store, room_id, rx1.port)

            async def forwarders() -> list[tuple[str, int]]:
                return [(f.host, f.port) for f in await bridge.list_forwarders(number, secret=secret)]

            await eventually(lambda: _eq(forwarders(), [("127.0.0.1", rx1.port)]), 10, "forwarder to rx1")
            await eventually(
                lambda: _status(store, room_id, records.JanusStatus.FORWARDING), 10, "forwarding"
            )
            assert len(await rx1.collect(0.5)) > 10

            # the mixer moves: the old forwarder is stopped, a new one created
            await mixer_record(store, room_id, rx2.port)
            await eventually(lambda: _eq(forwarders(), [("127.0.0.1", rx2.port)]), 10, "forwarder to rx2")
            assert len(await rx2.collect(0.5)) > 10
            await rx1.collect(0.2)  # drain what was in flight
            assert await rx1.collect(0.5) == []

            # heartbeat and health
            hb = await store.get(StateKey("januses", manager_config.janus_id, "heartbeat"))
            assert hb is not None and hb.record.streams == 1 and hb.record.host == "127.0.0.1"
            async with httpx.AsyncClient() as http:
                health = (await http.get(f"http://{manager_config.http.addr}/health")).json()
                metrics = (await http.get(f"http://{manager_config.http.addr}/metrics")).text
            assert health["status"] == "ok" and health["rooms"] == 1 and health["forwarders"] == 1
            assert "svc_janus_rooms" in metrics

            # the room is removed: forwarder and room gone, record deleted
            await stop_room(store, room_id)

            async def gone() -> bool:
                return (
                    await rooms_by_description(bridge, room_id) == []
                    and await _record(store, room_id) is None
                )

            await eventually(gone, 10, "room destroyed and record deleted")
            assert app.service.held == {}
            await eventually(lambda: _streams(store, manager_config.janus_id, 0), 10, "heartbeat streams 0")
        # the heartbeat lease is revoked on shutdown
        assert await store.get(StateKey("januses", manager_config.janus_id, "heartbeat")) is None
    finally:
        rx1.close()
        rx2.close()


async def _eq(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _status(store: StateStore, room_id: str, status: records.JanusStatus) -> bool:
    rec = await _record(store, room_id)
    return rec is not None and rec.status is status


def _forwarding(store: StateStore, room_id: str) -> Callable[[], Awaitable[bool]]:
    return lambda: _status(store, room_id, records.JanusStatus.FORWARDING)


async def _streams(store: StateStore, janus_id: str, streams: int) -> bool:
    hb = await store.get(StateKey("januses", janus_id, "heartbeat"))
    return hb is not None and hb.record.streams == streams


async def test_room_of_another_janus_is_left_alone(
    manager_config: Config, store: StateStore, janus_client: JanusClient, janus_server: JanusServer
) -> None:
    bridge = bridge_for(janus_client, janus_server)
    mine, theirs = unique_id("mine"), unique_id("theirs")
    async with running(manager_config):
        await live_room(store, theirs, janus_id="janus-other")
        await live_room(store, mine, janus_id=manager_config.janus_id)
        await eventually(lambda: _record(store, mine), 10, "record of my room")
        assert await rooms_by_description(bridge, theirs) == []
        assert await _record(store, theirs) is None
        # moved to another Janus: torn down here, record deleted (it still named us)
        await live_room(store, mine, janus_id="janus-other")

        async def moved() -> bool:
            return await rooms_by_description(bridge, mine) == [] and await _record(store, mine) is None

        await eventually(moved, 10, "room torn down after the move")


async def test_rebuild_adopts_rooms_and_removes_orphans(
    manager_config: Config, store: StateStore, janus_client: JanusClient, janus_server: JanusServer
) -> None:
    bridge = bridge_for(janus_client, janus_server)
    keep, drop = unique_id("keep"), unique_id("drop")
    orphan = unique_id("orphan")
    rx, stale = OpusReceiver(), OpusReceiver()
    try:
        async with running(manager_config):
            for room_id in (keep, drop):
                await live_room(store, room_id, janus_id=manager_config.janus_id)
                await mixer_record(store, room_id, rx.port)
            for room_id in (keep, drop):
                await eventually(_forwarding(store, room_id), 10, f"{room_id} forwarding")
        # The manager is down (rooms keep running in Janus). Meanwhile: one room is stopped, an
        # orphan appears (a room of ours etcd knows nothing about), a stale forwarder is added.
        kept = await _record(store, keep)
        assert kept is not None and kept.janus_room_id is not None
        number = kept.janus_room_id
        secret = _secret(manager_config, keep, number)
        [good] = await bridge.list_forwarders(number, secret=secret)
        await bridge.rtp_forward(number, secret=secret, host="127.0.0.1", port=stale.port)
        await stop_room(store, drop)
        orphan_number = await random_free_room(bridge)
        await bridge.create_audiobridge_room(
            orphan_number, description=orphan, secret=_secret(manager_config, orphan, orphan_number)
        )
        async with running(manager_config) as app:
            # adopted, not duplicated; the right forwarder kept (same stream), the stale one stopped
            assert await rooms_by_description(bridge, keep) == [number]
            assert app.service.held[keep].janus_room_id == number
            assert [f.stream_id for f in await bridge.list_forwarders(number, secret=secret)] == [
                good.stream_id
            ]
            assert await rooms_by_description(bridge, orphan) == []

            async def dropped() -> bool:
                return await rooms_by_description(bridge, drop) == [] and await _record(store, drop) is None

            await eventually(dropped, 10, "stopped room destroyed, record deleted")
            assert set(app.service.held) == {keep}
            await stop_room(store, keep)
            await eventually(lambda: _eq(rooms_by_description(bridge, keep), []), 10, "keep destroyed")
    finally:
        rx.close()
        stale.close()
