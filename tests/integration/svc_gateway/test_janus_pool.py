"""The gateway's Janus pool against a real Janus: an anchor leg joins an AudioBridge room with an
aiortc offer, hears of the other participants, keeps alive, mutes, leaves; sessions time out,
Janus dies and comes back, sessions are resumed.

ICE never connects here (Janus and aiortc skip loopback, infra-notes): the tests check the
signalling. The offers carry no candidates (stripped), so Janus has nowhere to send checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from common.errors import NotFound, Unauthorized, Unavailable
from common.janus_ws import SessionLost
from svc_gateway.janus_pool import JanusPool, participant_display
from svc_janus.audiobridge import SAMPLING_RATE_HZ, AudioBridge
from svc_janus.janus_ws import JanusClient
from tests.integration.eventcore import eventually
from tests.integration.svc_janus.janus_helpers import RtpSpeaker, random_free_room
from tests.servers import LOOPBACK
from tests.servers_janus import JanusServer

pytestmark = pytest.mark.janus

PIN = "pin-42"
SECRET = "room-secret"


class Events:
    """An owner's ``on_event``: records (kind, data) in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.seen.append((kind, data))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for k, d in self.seen if k == kind]


async def aiortc_offer() -> dict[str, str]:
    """An SDP offer with one audio track, as a browser would send it (minus its candidates)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN server: nothing leaves the host
    try:
        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
    finally:
        await pc.close()
    lines = [ln for ln in sdp.splitlines() if not ln.startswith(("a=candidate:", "a=end-of-candidates"))]
    return {"type": "offer", "sdp": "\r\n".join(lines) + "\r\n"}


@pytest.fixture(scope="module")
def offer() -> dict[str, str]:
    # One offer serves every join of the module (Janus never gets to use it); its own loop.
    return asyncio.run(aiortc_offer())


@pytest.fixture
async def pool(janus_server: JanusServer) -> AsyncIterator[JanusPool]:
    async with JanusPool(ws_port=janus_server.ws_port, request_timeout_s=5) as p:
        yield p


async def create_room(client: JanusClient, janus: JanusServer) -> int:
    bridge = AudioBridge(client, admin_key=janus.admin_key)
    room = await random_free_room(bridge)
    await client.message(
        {
            "request": "create",
            "room": room,
            "admin_key": janus.admin_key,
            "description": "gateway-pool",
            "secret": SECRET,
            "pin": PIN,
            "sampling_rate": SAMPLING_RATE_HZ,
            "permanent": False,
            "audiolevel_event": True,
            "allow_rtp_participants": True,
        }
    )
    return room


@pytest.fixture
async def room(janus_client: JanusClient, janus_server: JanusServer) -> AsyncIterator[int]:
    number = await create_room(janus_client, janus_server)
    yield number
    with contextlib.suppress(NotFound):
        await janus_client.message({"request": "destroy", "room": number, "secret": SECRET})


async def participants(client: JanusClient, room: int) -> dict[str, dict[str, Any]]:
    data = await client.message({"request": "listparticipants", "room": room})
    return {p["display"]: p for p in data.get("participants", [])}


async def session_exists(client: JanusClient, session_id: int) -> bool:
    """Ask from another connection: a keepalive of an unknown session is a 458."""
    try:
        await client._call({"janus": "keepalive", "session_id": session_id}, "keepalive")
    except SessionLost:
        return False
    return True


def user_display() -> tuple[str, str]:
    user = str(uuid.uuid4())
    return user, participant_display(user)


async def test_join_trickle_keepalive_mute_leave(
    pool: JanusPool, janus_server: JanusServer, janus_client: JanusClient, room: int, offer: dict[str, str]
) -> None:
    leg, resumed = await pool.open_leg(janus_id="j1", host=LOOPBACK, resume=None)
    assert not resumed and leg.janus_id == "j1" and leg.session_id > 0 and leg.handle_id > 0
    assert leg.is_alive and pool.legs("j1") == [leg]
    user, display = user_display()
    assert pool.participant_user(display) == user

    answer = await leg.join(room=room, pin=PIN, display=display, muted=False, offer=offer)
    assert answer["type"] == "answer"
    assert "m=audio" in answer["sdp"] and "opus/48000" in answer["sdp"]
    assert leg.participant_id is not None
    listed = await participants(janus_client, room)
    assert listed[display]["id"] == leg.participant_id and listed[display]["muted"] is False

    await leg.trickle(
        {"candidate": f"candidate:1 1 udp 2130706431 {LOOPBACK} 9 typ host", "sdpMLineIndex": 0}
    )
    await leg.trickle({"completed": True})
    await leg.trickle(None)
    await leg.keepalive()

    await leg.configure(muted=True)
    assert (await participants(janus_client, room))[display]["muted"] is True
    await leg.configure(muted=False)
    assert (await participants(janus_client, room))[display]["muted"] is False

    await leg.leave()
    assert display not in await participants(janus_client, room)
    assert not await session_exists(janus_client, leg.session_id)
    assert not leg.is_alive and pool.legs("j1") == []
    await leg.leave()  # idempotent
    with pytest.raises(SessionLost):
        await leg.keepalive()


async def test_join_errors_are_typed(
    pool: JanusPool, janus_client: JanusClient, room: int, offer: dict[str, str]
) -> None:
    leg, _ = await pool.open_leg(janus_id="j1", host=LOOPBACK, resume=None)
    events = Events()
    leg.on_event = events
    _, display = user_display()
    with pytest.raises(Unauthorized):
        await leg.join(room=room, pin="wrong", display=display, muted=False, offer=offer)
    fresh = await aiortc_offer()
    with pytest.raises(NotFound):
        await leg.join(
            room=room + 1 if room < 999_999 else 100_000, pin=PIN, display=display, muted=False, offer=fresh
        )
    # the leg is still usable (its failed offers were hung up), and the owner heard nothing
    answer = await leg.join(room=room, pin=PIN, display=display, muted=True, offer=offer)
    assert answer["type"] == "answer"
    assert (await participants(janus_client, room))[display]["muted"] is True
    assert events.seen == []
    await leg.leave()
    # leave of a leg that never joined: no error either
    other, _ = await pool.open_leg(janus_id="j1", host=LOOPBACK, resume=None)
    await other.leave()
    assert not await session_exists(janus_client, other.session_id)


async def test_events_of_other_participants_reach_the_leg(
    pool: JanusPool, janus_client: JanusClient, room: int, offer: dict[str, str]
) -> None:
    events = Events()
    leg, _ = await pool.open_leg(janus_id="j1", host=LOOPBACK, resume=None)
    leg.on_event = events
    _, display = user_display()
    await leg.join(room=room, pin=PIN, display=display, muted=False, offer=offer)

    # A second anchor already in the room is reported as joined to the next one.
    late, _ = await pool.open_leg(janus_id="j1", host=LOOPBACK, resume=None)
    late_events = Events()
    late.on_event = late_events
    _, late_display = user_display()
    await late.join(room=room, pin=PIN, display=late_display, muted=False, offer=offer)
    assert [p["display"] for e in late_events.of("joined") for p in e["participants"]] == [display]
    # The first leg is not told of the second yet: AudioBridge announces a WebRTC participant
    # once its media is up, which never happens here (no ICE over loopback).
    assert not events.of("joined")

    async with RtpSpeaker(janus_client, room, pin=PIN):
        await eventually(
            lambda: any(p["display"] == "tone" for e in events.of("joined") for p in e["participants"]),
            5,
            "a joined event for the RTP participant",
        )
        tone_id = next(
            p["id"] for e in events.of("joined") for p in e["participants"] if p["display"] == "tone"
        )
        # No talking event: AudioBridge judges talking from the RTP audio-level extension, and
        # it never flagged this participant even with the extension added (Janus 1.1.2); the
        # routing of talking events is unit-tested (tests/unit/svc_gateway/test_janus_pool.py).
    await eventually(lambda: {"id": tone_id, "display": "tone"} in events.of("leaving"), 5, "leaving")
    assert late_events.of("leaving")  # every leg hears it
    await late.leave()
    await eventually(
        lambda: any(e["id"] == late.participant_id for e in events.of("leaving")), 5, "late leaves"
    )
    assert not events.of("gone")
    await leg.leave()
    assert not events.of("gone")  # leave is no news to the owner


async def test_a_broken_callback_does_not_stop_the_reader(
    pool: JanusPool, janus_client: JanusClient, room: int, offer: dict[str, str]
) -> None:
    def broken(kind: str, data: dict[str, Any]) -> None:
        raise RuntimeError("owner bug")

    leg, _ = await pool.open_leg(janus_id="j1", host=LOOPBACK, resume=None)
    leg.on_event = broken
    _, display = user_display()
    await leg.join(room=room, pin=PIN, display=display, muted=False, offer=offer)
    other, _ = await pool.open_leg(janus_id="j1", host=LOOPBACK, resume=None)
    await other.join(room=room, pin=PIN, display=user_display()[1], muted=False, offer=offer)
    await leg.keepalive()  # replies still come
    await other.leave()
    await leg.leave()


async def test_resume(
    pool: JanusPool, janus_server: JanusServer, janus_client: JanusClient, room: int, offer: dict[str, str]
) -> None:
    leg, _ = await pool.open_leg(janus_id="j1", host=LOOPBACK, resume=None)
    _, display = user_display()
    await leg.join(room=room, pin=PIN, display=display, muted=False, offer=offer)
    ids = (leg.session_id, leg.handle_id)

    # the client reconnects to the same gateway process: the same leg
    again, resumed = await pool.open_leg(janus_id="j1", host=LOOPBACK, resume=ids)
    assert resumed and again is leg

    # ... or to another gateway process: it claims the session from Janus
    async with JanusPool(ws_port=janus_server.ws_port, request_timeout_s=5) as other_pool:
        claimed, resumed = await other_pool.open_leg(janus_id="j1", host=LOOPBACK, resume=ids)
        assert resumed and (claimed.session_id, claimed.handle_id) == ids
        events = Events()
        claimed.on_event = events
        await claimed.keepalive()
        await claimed.configure(muted=True)
        assert (await participants(janus_client, room))[display]["muted"] is True
        # the first process lets go of its leg without touching Janus
        leg.release()
        assert pool.legs("j1") == [] and await session_exists(janus_client, leg.session_id)

        # a handle that is not the session's, or no session at all: a new session
        fresh, resumed = await other_pool.open_leg(janus_id="j1", host=LOOPBACK, resume=(ids[0], ids[1] + 1))
        assert not resumed and fresh.session_id != ids[0]
        assert claimed.is_alive  # a wrong handle of a session in use here does not touch it
        await claimed.leave()
        assert not await session_exists(janus_client, ids[0])
        gone, resumed = await other_pool.open_leg(janus_id="j1", host=LOOPBACK, resume=ids)
        assert not resumed and gone.session_id != ids[0]
        nothing, resumed = await pool.open_leg(janus_id="j1", host=LOOPBACK, resume=(12345, 678))
        assert not resumed
        for a_leg in (fresh, gone, nothing):
            await a_leg.leave()

        # A session claimed from elsewhere whose handle is not in it: destroyed, a new one.
        victim, _ = await pool.open_leg(janus_id="j1", host=LOOPBACK, resume=None)
        wrong = (victim.session_id, victim.handle_id + 1)
        replaced, resumed = await other_pool.open_leg(janus_id="j1", host=LOOPBACK, resume=wrong)
        assert not resumed and replaced.session_id != victim.session_id
        assert not await session_exists(janus_client, victim.session_id)
        assert other_pool.legs("j1") == [replaced]
        await replaced.leave()


@pytest.fixture(scope="module")
def short_janus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JanusServer]:
    """A Janus that times sessions out after 2 s (its watchdog looks every 2 s)."""
    janus = JanusServer(tmp_path_factory.mktemp("janus-short"), session_timeout_s=2)
    janus.start()
    try:
        yield janus
    finally:
        janus.stop()


async def test_a_session_without_keepalives_times_out(short_janus: JanusServer) -> None:
    # the client keepalives reach Janus at most every 0.5 s, within its 2 s session timeout
    async with JanusPool(ws_port=short_janus.ws_port, request_timeout_s=5, keepalive_interval_s=0.5) as pool:
        idle_events, kept_events = Events(), Events()
        idle, _ = await pool.open_leg(janus_id="js", host=LOOPBACK, resume=None)
        kept, _ = await pool.open_leg(janus_id="js", host=LOOPBACK, resume=None)
        idle.on_event, kept.on_event = idle_events, kept_events

        async def keep() -> None:
            while True:
                await kept.keepalive()
                await asyncio.sleep(0.5)

        keeper = asyncio.create_task(keep())
        try:
            await eventually(lambda: idle_events.of("gone"), 8, "the idle leg is gone")
            assert idle_events.of("gone") == [{"reason": "timeout"}] and not idle.is_alive
            assert pool.legs("js") == [kept] and not kept_events.seen
        finally:
            keeper.cancel()
            with pytest.raises(asyncio.CancelledError):
                await keeper
        with pytest.raises(SessionLost):
            await idle.keepalive()
        # a resume of the timed-out session: a new one
        leg, resumed = await pool.open_leg(
            janus_id="js", host=LOOPBACK, resume=(idle.session_id, idle.handle_id)
        )
        assert not resumed and leg.session_id != idle.session_id
        await idle.leave()  # never raises for a gone session
        await leg.leave()
        await kept.leave()


async def test_janus_killed_every_leg_gone_then_new_legs(tmp_path: Path, offer: dict[str, str]) -> None:
    janus = JanusServer(tmp_path / "janus")
    await asyncio.to_thread(janus.start)
    try:
        async with JanusPool(ws_port=janus.ws_port, request_timeout_s=3) as pool:
            legs = [(await pool.open_leg(janus_id="jk", host=LOOPBACK, resume=None))[0] for _ in range(3)]
            events = [Events() for _ in legs]
            for leg, ev in zip(legs, events, strict=True):
                leg.on_event = ev
            janus.kill()
            await eventually(lambda: all(ev.of("gone") for ev in events), 5, "every leg gone")
            assert all(ev.of("gone") == [{"reason": "disconnected"}] for ev in events)
            assert pool.legs("jk") == []
            with pytest.raises(Unavailable):
                await legs[0].keepalive()
            with pytest.raises(Unavailable):
                await pool.open_leg(janus_id="jk", host=LOOPBACK, resume=None)
            await asyncio.to_thread(janus.start)
            leg, resumed = await pool.open_leg(
                janus_id="jk", host=LOOPBACK, resume=(legs[0].session_id, legs[0].handle_id)
            )
            assert not resumed
            await leg.keepalive()
            for old in legs:
                await old.leave()
            await leg.leave()
    finally:
        await asyncio.to_thread(janus.stop)


async def test_pool_close_tells_the_legs(janus_server: JanusServer) -> None:
    pool = JanusPool(ws_port=janus_server.ws_port, request_timeout_s=5)
    leg, _ = await pool.open_leg(janus_id="j1", host=LOOPBACK, resume=None)
    events = Events()
    leg.on_event = events
    await pool.aclose()
    assert events.seen == [("gone", {"reason": "closed"})]
    with pytest.raises(Unavailable):
        await pool.open_leg(janus_id="j1", host=LOOPBACK, resume=None)


async def test_keepalives_reach_janus_only_after_the_interval(short_janus: JanusServer) -> None:
    """Keepalives every 0.2 s keep nothing alive when the pool forwards one only after 5 s of
    quiet: Janus (2 s session timeout) times the session out. Hence the default interval of a
    third of Janus's session timeout."""
    async with JanusPool(ws_port=short_janus.ws_port, request_timeout_s=5, keepalive_interval_s=5) as pool:
        events = Events()
        leg, _ = await pool.open_leg(janus_id="js", host=LOOPBACK, resume=None)
        leg.on_event = events

        async def keep() -> None:
            while True:
                await leg.keepalive()
                await asyncio.sleep(0.2)

        keeper = asyncio.create_task(keep())
        try:
            await eventually(lambda: events.of("gone"), 8, "the session timed out")
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, SessionLost):
                await keeper
        assert events.of("gone") == [{"reason": "timeout"}]
