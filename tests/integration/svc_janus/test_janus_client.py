"""The Janus WebSocket client against a real Janus: request shapes, error mapping, keepalive,
request timeouts and reconnection with a new session."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import websockets

from common.errors import Conflict, DependencyTimeout, InvalidInput, NotFound, Unauthorized, Unavailable
from svc_janus.audiobridge import AudioBridge
from svc_janus.janus_ws import JanusClient, SessionInfo, SessionLost
from tests.integration.eventcore import eventually
from tests.integration.svc_janus.janus_helpers import OpusReceiver, random_free_room, rooms_by_description
from tests.servers_janus import JanusServer

pytestmark = pytest.mark.janus


@pytest.fixture
async def client(janus_server: JanusServer) -> AsyncIterator[JanusClient]:
    async with JanusClient(janus_server.ws_url, request_timeout_s=5) as c:
        await c.wait_connected(10)
        yield c


async def test_session_and_info(client: JanusClient) -> None:
    session = client.session
    assert session is not None and session.number == 1 and session.session_id > 0
    info = await client.info()
    assert info["janus"] == "server_info"
    assert "janus.plugin.audiobridge" in info["plugins"]
    # Only AudioBridge is loaded (infra/janus/janus.jcfg disables the rest).
    assert list(info["plugins"]) == ["janus.plugin.audiobridge"]
    assert session.session_timeout_s == 60


async def test_audiobridge_requests(client: JanusClient, janus_server: JanusServer) -> None:
    bridge = AudioBridge(client, admin_key=janus_server.admin_key)
    room = await random_free_room(bridge)
    await bridge.create_audiobridge_room(room, description="client-shapes", secret="s1", pin="abc123")
    try:
        assert await bridge.exists(room)
        listed = {r.room: r for r in await bridge.list_audiobridge_rooms()}
        assert listed[room].description == "client-shapes" and listed[room].pin_required
        rx = OpusReceiver()
        try:
            fw = await bridge.rtp_forward(room, secret="s1", host="127.0.0.1", port=rx.port)
            forwarders = await bridge.list_forwarders(room, secret="s1")
            assert [(f.stream_id, f.host, f.port, f.ptype) for f in forwarders] == [
                (fw.stream_id, "127.0.0.1", rx.port, 111)
            ]
            # always_on: silence flows to the mixer even with nobody in the room
            packets = await rx.collect(1.0)
            assert len(packets) > 20 and all(p[1] & 0x7F == 111 for p in packets)
            await bridge.stop_rtp_forward(room, secret="s1", stream_id=fw.stream_id)
            assert await bridge.list_forwarders(room, secret="s1") == []
        finally:
            rx.close()
        await bridge.edit_pin(room, secret="s1", pin="xyz789")
        # an asynchronous request (join: ack, then event) on a second handle
        handle = await client.attach()
        with pytest.raises(Unauthorized):
            await client.message_async({"request": "join", "room": room, "pin": "abc123"}, handle_id=handle)
        joined = await client.message_async(
            {"request": "join", "room": room, "pin": "xyz789", "display": "t", "rtp": {"payload_type": 111}},
            handle_id=handle,
        )
        assert joined["audiobridge"] == "joined" and joined["rtp"]["ip"] == "127.0.0.1"
        assert [p["display"] for p in await bridge.list_participants(room)] == ["t"]
        await client.detach(handle)
    finally:
        await bridge.destroy_audiobridge_room(room, secret="s1")
    assert not await bridge.exists(room)
    assert await rooms_by_description(bridge, "client-shapes") == []


async def test_plugin_errors_are_typed(client: JanusClient, janus_server: JanusServer) -> None:
    bridge = AudioBridge(client, admin_key=janus_server.admin_key)
    room = await random_free_room(bridge)
    await bridge.create_audiobridge_room(room, description="client-errors", secret="s2")
    try:
        with pytest.raises(Conflict) as exists:
            await bridge.create_audiobridge_room(room, description="again", secret="s2")
        assert exists.value.fields["janus_code"] == 486
        with pytest.raises(Unauthorized) as wrong:
            await bridge.destroy_audiobridge_room(room, secret="wrong")
        assert wrong.value.fields["janus_code"] == 489
        with pytest.raises(NotFound) as missing:
            await bridge.stop_rtp_forward(room + 1 if room < 999_999 else 100_000, secret="x", stream_id=1)
        assert missing.value.fields["janus_code"] == 485
        # The reference's request name: Janus says "unknown request"; that is no success.
        with pytest.raises(InvalidInput) as unknown:
            await client.message({"request": "stop_rtp_forwarder", "room": room, "stream_id": 1})
        assert unknown.value.fields["janus_code"] == 482
        # No admin_key: rooms can only be created by the manager.
        with pytest.raises(InvalidInput) as no_key:
            await client.message({"request": "create", "room": room + 1})
        assert no_key.value.fields["janus_code"] == 483
        wrong_key = AudioBridge(client, admin_key="not-the-key")
        with pytest.raises(Unauthorized):
            await wrong_key.create_audiobridge_room(room, description="x", secret="y")
    finally:
        await bridge.destroy_audiobridge_room(room, secret="s2")
    with pytest.raises(NotFound):
        await bridge.destroy_audiobridge_room(room, secret="s2")


async def test_core_errors_are_typed(client: JanusClient) -> None:
    with pytest.raises(SessionLost):
        await client.message({"request": "list"}, handle_id=12345)


async def test_keepalive_keeps_the_session_past_session_timeout(tmp_path: Path) -> None:
    janus = JanusServer(tmp_path / "janus", session_timeout_s=2)
    janus.start()
    try:
        async with (
            JanusClient(janus.ws_url, request_timeout_s=2, keepalive_interval_s=30) as c,
            websockets.connect(janus.ws_url, subprotocols=[websockets.Subprotocol("janus-protocol")]) as ws,
        ):
            first = await c.wait_connected(5)
            # the client caps its keepalive at a third of what Janus reports
            assert c.effective_keepalive_s == pytest.approx(2 / 3)
            # The control, side by side: a session nobody keeps alive expires.
            await ws.send(json.dumps({"janus": "create", "transaction": "c"}))
            sid = json.loads(await ws.recv())["data"]["id"]
            msgs: list[dict[str, object]] = []
            async with asyncio.timeout(10):
                while not any(m.get("janus") == "timeout" for m in msgs):
                    msgs.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"janus": "keepalive", "session_id": sid, "transaction": "k"}))
            assert json.loads(await ws.recv())["error"]["code"] == 458
            await asyncio.sleep(1)
            assert c.session == first and c.keepalives_sent >= 3
            assert await AudioBridge(c, admin_key=janus.admin_key).list_audiobridge_rooms() is not None
    finally:
        janus.stop()


async def test_request_times_out_when_janus_does_not_answer(tmp_path: Path) -> None:
    janus = JanusServer(tmp_path / "janus")
    janus.start()
    try:
        async with JanusClient(janus.ws_url, request_timeout_s=0.5) as c:
            await c.wait_connected(5)
            os.kill(janus.pid, signal.SIGSTOP)
            try:
                with pytest.raises(DependencyTimeout) as timed_out:
                    await c.message({"request": "list"})
                assert isinstance(timed_out.value, TimeoutError)
            finally:
                os.kill(janus.pid, signal.SIGCONT)
            await eventually(lambda: c.is_connected, 10, "connected after SIGCONT")
    finally:
        janus.stop()


async def test_reconnects_with_a_new_session_after_a_janus_restart(tmp_path: Path) -> None:
    janus = JanusServer(tmp_path / "janus")
    janus.start()
    sessions: list[SessionInfo] = []
    try:
        async with JanusClient(janus.ws_url, request_timeout_s=2, on_session=sessions.append) as c:
            await c.wait_connected(5)
            janus.kill()
            with pytest.raises(Unavailable):
                await c.message({"request": "list"})
            await asyncio.to_thread(janus.start)
            await eventually(lambda: len(sessions) == 2, 10, "a second session")
            assert sessions[1].number == 2 and sessions[1].session_id != sessions[0].session_id
            assert await c.message({"request": "list"}) is not None
    finally:
        janus.stop()
