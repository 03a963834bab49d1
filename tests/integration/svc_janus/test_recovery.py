"""Crashes: Janus killed and restarted (rooms and forwarders rebuilt, janus_restarted published)
and the manager killed with SIGKILL (on restart no duplicate and no orphan rooms)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from common import records
from common.bus import Bus
from common.contracts import validate_payload
from common.keys import Keyspace, StateKey
from common.state import StateStore
from svc_janus.app import running
from svc_janus.audiobridge import AudioBridge
from svc_janus.config import Config
from svc_janus.janus_ws import JanusClient
from svc_janus.service import room_secret
from tests.integration.eventcore import eventually
from tests.integration.svc_janus.janus_helpers import (
    OpusReceiver,
    bridge_for,
    live_room,
    manager_env,
    mixer_record,
    rooms_by_description,
    stop_room,
    unique_id,
)
from tests.servers import EtcdServer, NatsServer
from tests.servers_janus import JanusServer

pytestmark = pytest.mark.janus

ROOT = Path(__file__).resolve().parents[3]


async def _forwarding(store: StateStore, room_ids: list[str]) -> bool:
    for room_id in room_ids:
        got = await store.get(StateKey("rooms", room_id, "janus"))
        if got is None or got.record.status is not records.JanusStatus.FORWARDING:
            return False
    return True


@pytest.fixture
async def private_janus(tmp_path: Path) -> AsyncIterator[JanusServer]:
    janus = JanusServer(tmp_path / "janus")
    await asyncio.to_thread(janus.start)
    try:
        yield janus
    finally:
        await asyncio.to_thread(janus.stop)


async def test_janus_restart_rebuilds_every_room_and_announces_it(
    private_janus: JanusServer,
    etcd_server: EtcdServer,
    nats_private: NatsServer,
    keyspace: Keyspace,
    store: StateStore,
    bus: Bus,
) -> None:
    janus_id = unique_id("janus")
    config = Config.from_env(
        manager_env(
            private_janus,
            nats_url=nats_private.url,
            etcd_endpoint=etcd_server.endpoint,
            keyspace=keyspace,
            janus_id=janus_id,
            monitor_interval="3s",
        )
    )
    room_ids = [unique_id("rs") for _ in range(3)]
    receivers = [OpusReceiver() for _ in room_ids]
    events: list[tuple[str, bytes]] = []

    async def on_event(msg: object) -> None:
        events.append((msg.subject, msg.data))  # type: ignore[attr-defined]

    sub = await bus.nc.subscribe("rtc.events.rooms.*.janus_restarted", cb=on_event)
    try:
        async with running(config) as app:
            for room_id, rx in zip(room_ids, receivers, strict=True):
                await live_room(store, room_id, janus_id=janus_id)
                await mixer_record(store, room_id, rx.port)
            await eventually(lambda: _forwarding(store, room_ids), 10, "all rooms forwarding")
            assert events == []
            await asyncio.to_thread(private_janus.kill)
            killed_at = time.monotonic()
            await asyncio.to_thread(private_janus.start)

            async with JanusClient(private_janus.ws_url, request_timeout_s=5) as probe:
                await probe.wait_connected(10)
                bridge = bridge_for(probe, private_janus)

                async def rebuilt() -> bool:
                    for room_id, rx in zip(room_ids, receivers, strict=True):
                        numbers = await rooms_by_description(bridge, room_id)
                        if len(numbers) != 1:
                            return False
                        secret = room_secret(config.admin_secret, janus_id, room_id, numbers[0])
                        forwarders = await bridge.list_forwarders(numbers[0], secret=secret)
                        if [(f.host, f.port) for f in forwarders] != [("127.0.0.1", rx.port)]:
                            return False
                    return len(events) == len(room_ids)

                await eventually(rebuilt, 15, "rooms, forwarders and events after the Janus restart")
            assert time.monotonic() - killed_at < 15
            assert sorted(s for s, _ in events) == sorted(
                f"rtc.events.rooms.{r}.janus_restarted" for r in room_ids
            )
            for subject, data in events:
                validate_payload(subject, data)
                event = records.decode_payload(records.JanusRestarted, data)
                got = await store.get(StateKey("rooms", event.room_id, "janus"))
                assert got is not None and got.record.janus_room_id == event.janus_room_id
                assert event.janus_id == janus_id
            assert app.reconciler.restarts_detected >= 1
            # the mix flows again
            for rx in receivers:
                assert len(await rx.collect(0.5)) > 10
    finally:
        await sub.unsubscribe()
        for rx in receivers:
            rx.close()


async def test_manager_killed_leaves_no_duplicates_or_orphans(
    janus_server: JanusServer,
    janus_client: JanusClient,
    etcd_server: EtcdServer,
    nats_private: NatsServer,
    keyspace: Keyspace,
    store: StateStore,
    tmp_path: Path,
) -> None:
    janus_id = unique_id("janus")
    env = {
        **os.environ,
        **manager_env(
            janus_server,
            nats_url=nats_private.url,
            etcd_endpoint=etcd_server.endpoint,
            keyspace=keyspace,
            janus_id=janus_id,
        ),
        "PYTHONUNBUFFERED": "1",
    }
    bridge = bridge_for(janus_client, janus_server)
    keep = [unique_id("kk") for _ in range(2)]
    dropped = unique_id("kd")
    rx = OpusReceiver()
    procs: list[asyncio.subprocess.Process] = []

    async def start_manager() -> asyncio.subprocess.Process:
        log = (tmp_path / f"manager-{len(procs)}.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "svc_janus",
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
        )
        log.close()
        procs.append(proc)
        return proc

    try:
        first = await start_manager()
        for room_id in [*keep, dropped]:
            await live_room(store, room_id, janus_id=janus_id)
            await mixer_record(store, room_id, rx.port)
        await eventually(lambda: _forwarding(store, [*keep, dropped]), 20, "rooms forwarding")
        before = {r: await rooms_by_description(bridge, r) for r in keep}
        assert all(len(n) == 1 for n in before.values())
        first.send_signal(signal.SIGKILL)
        await first.wait()
        await stop_room(store, dropped)
        await start_manager()

        async def settled() -> bool:
            if await rooms_by_description(bridge, dropped) != []:
                return False
            return await store.get(StateKey("rooms", dropped, "janus")) is None

        await eventually(settled, 20, "the stopped room destroyed by the restarted manager")
        # the kept rooms are the same Janus rooms (adopted), each with exactly one forwarder
        for room_id in keep:
            assert await rooms_by_description(bridge, room_id) == before[room_id]
            secret = room_secret(janus_server.admin_key, janus_id, room_id, before[room_id][0])
            assert len(await bridge.list_forwarders(before[room_id][0], secret=secret)) == 1

        # the restarted manager may still be starting its HTTP server (rebuild runs first)
        async def reports_kept_rooms() -> bool:
            try:
                status = await _http_json(env["HTTP_ADDR"])
            except httpx.TransportError:
                return False
            return status["rooms"] == len(keep)

        await eventually(reports_kept_rooms, 10, "the restarted manager reports the kept rooms")
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        rx.close()
        for room_id in [*keep, dropped]:
            for number in await rooms_by_description(bridge, room_id):
                await bridge.destroy_audiobridge_room(
                    number, secret=room_secret(janus_server.admin_key, janus_id, room_id, number)
                )


async def _http_json(addr: str) -> dict[str, object]:
    async with httpx.AsyncClient() as http:
        body: dict[str, object] = (await http.get(f"http://{addr}/health", timeout=5)).json()
    return body


async def test_periodic_check_recreates_a_room_janus_lost(
    manager_config: Config, store: StateStore, janus_client: JanusClient, janus_server: JanusServer, bus: Bus
) -> None:
    """No session change at all: only the periodic list notices the missing room."""
    bridge = bridge_for(janus_client, janus_server)
    room_id = unique_id("lost")
    events: list[bytes] = []

    async def on_event(msg: object) -> None:
        events.append(msg.data)  # type: ignore[attr-defined]

    sub = await bus.nc.subscribe(f"rtc.events.rooms.{room_id}.janus_restarted", cb=on_event)
    try:
        async with running(manager_config) as app:
            await live_room(store, room_id, janus_id=manager_config.janus_id)
            await eventually(lambda: store.get(StateKey("rooms", room_id, "janus")), 10, "record")
            [number] = await rooms_by_description(bridge, room_id)
            session = app.client.session
            await bridge.destroy_audiobridge_room(
                number,
                secret=room_secret(manager_config.admin_secret, manager_config.janus_id, room_id, number),
            )

            async def back() -> bool:
                return len(await rooms_by_description(bridge, room_id)) == 1 and len(events) == 1

            await eventually(back, 10, "room recreated by the periodic check")
            assert app.client.session == session
            await stop_room(store, room_id)
            await eventually(lambda: _gone(bridge, room_id), 10, "room destroyed")
    finally:
        await sub.unsubscribe()


async def _gone(bridge: AudioBridge, room_id: str) -> bool:
    return await rooms_by_description(bridge, room_id) == []
