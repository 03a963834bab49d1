"""What a listener sees when Janus is killed: svc_janus + svc_mixer + a private real Janus and a
plain-RTP tone speaker. After kill -9 and a restart of Janus the room is rebuilt (same Janus
room id, new forwarder), the mixer restarts FFmpeg for the new RTP stream, and the room's HLS
gets a new segment carrying the tone within 10 s of the kill. Before the forwarder was named in
the janus record FFmpeg was kept and wrote nothing for about as long as the room had been on air
(the new stream's timestamps start over): 15.2 s after 15 s on air, 35 s in the issue.

The empty room before that is the silent-speaker control: AudioBridge forwards the mix
continuously (``always_on``), so FFmpeg keeps writing segments and the output watchdog never
restarts it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common import records
from common.hlskey import derive_hls_key
from common.keys import Keyspace, StateKey
from common.state import StateStore
from svc_janus.app import running
from svc_janus.config import Config
from svc_janus.janus_ws import JanusClient
from tests.integration.eventcore import eventually
from tests.integration.svc_janus.janus_helpers import RtpSpeaker, live_room, manager_env, unique_id
from tests.integration.svc_mixer.mixer_helpers import HLS_KEY_SECRET, MixerProcess
from tests.servers import EtcdServer, NatsServer
from tests.servers_janus import JanusServer
from tests.servers_nginx import decode_pcm, tone_stats

pytestmark = [pytest.mark.janus, pytest.mark.ffmpeg, pytest.mark.slow]

logger = logging.getLogger(__name__)

FREQUENCY = 440
PIN = "pin555"
NONCE = "00" * 10  # what live_room writes
ROOM_AGE_AT_KILL_S = 15.0
_ENTRY = re.compile(r'^#EXT-X-KEY:METHOD=AES-128,URI="[^"]*",IV=0x([0-9a-f]{32})$|^(segment_(\d+)\.ts)$')


@pytest.fixture
async def private_janus(tmp_path: Path) -> AsyncIterator[JanusServer]:
    janus = JanusServer(tmp_path / "janus")
    await asyncio.to_thread(janus.start)
    try:
        yield janus
    finally:
        await asyncio.to_thread(janus.stop)


def _segments(playlist: Path) -> dict[int, tuple[str, str]]:
    """segment number -> (file name, IV) of the live playlist."""
    try:
        text = playlist.read_text()
    except OSError:
        return {}
    out: dict[int, tuple[str, str]] = {}
    iv = ""
    for line in text.splitlines():
        m = _ENTRY.match(line)
        if m is None:
            continue
        if m.group(1):
            iv = m.group(1)
        else:
            out[int(m.group(3))] = (m.group(2), iv)
    return out


def _tone_in(path: Path, key: bytes, iv: str) -> tuple[float, float] | None:
    """(frequency, dBFS) of a decrypted segment; None if it is gone or too short."""
    try:
        pcm = decode_pcm(["-decryption_key", key.hex(), "-decryption_iv", iv, "-i", f"crypto:{path}"])
        return tone_stats(pcm)
    except (RuntimeError, ValueError, OSError):
        return None


def _is_tone(stats: tuple[float, float] | None) -> bool:
    return stats is not None and abs(stats[0] - FREQUENCY) / FREQUENCY < 0.02 and stats[1] > -40


def _metric(mixer: MixerProcess, name: str) -> float:
    with urllib.request.urlopen(f"{mixer.url}/metrics", timeout=2) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


async def _forwarding(store: StateStore, room_id: str) -> records.JanusRecord | None:
    got = await store.get(StateKey("rooms", room_id, "janus"))
    if got is None or got.record.status is not records.JanusStatus.FORWARDING:
        return None
    rec: records.JanusRecord = got.record
    return rec


async def test_hls_continues_with_the_tone_after_janus_is_killed(
    private_janus: JanusServer,
    etcd_server: EtcdServer,
    nats_private: NatsServer,
    keyspace: Keyspace,
    store: StateStore,
    tmp_path: Path,
) -> None:
    janus_id = unique_id("janus")
    config = Config.from_env(
        manager_env(
            private_janus,
            nats_url=nats_private.url,
            etcd_endpoint=etcd_server.endpoint,
            keyspace=keyspace,
            janus_id=janus_id,
            monitor_interval="5s",  # the restart is noticed by the reconnect, not the period
        )
    )
    mixer = MixerProcess(
        tmp_path / "mixer",
        nats_url=nats_private.url,
        etcd_endpoint=etcd_server.endpoint,
        keyspace=keyspace,
    )
    room_id = unique_id("rst")
    playlist = mixer.hls_dir / room_id / "stream.m3u8"
    key = derive_hls_key(HLS_KEY_SECRET, room_id, NONCE)
    speakers: list[RtpSpeaker] = []
    clients = contextlib.AsyncExitStack()

    async def speak(janus_room_id: int) -> None:
        client = await clients.enter_async_context(JanusClient(private_janus.ws_url, request_timeout_s=5))
        await client.wait_connected(10)
        speaker = RtpSpeaker(client, janus_room_id, pin=PIN, frequency_hz=FREQUENCY)
        speakers.append(speaker)
        await speaker.start()

    try:
        await asyncio.to_thread(mixer.start)
        async with running(config):
            await live_room(store, room_id, janus_id=janus_id, mixer_id=mixer.mixer_id, pin=PIN)
            await eventually(lambda: _forwarding(store, room_id), 15, "room forwarding to the mixer")
            before = await _forwarding(store, room_id)
            forwarding_at = time.monotonic()
            assert before is not None and before.janus_room_id is not None
            assert before.forwarder_stream_id is not None

            # silence: nobody speaks, the forwarder still feeds FFmpeg, segments keep coming
            await eventually(lambda: len(_segments(playlist)) >= 1, 10, "first segment of the empty room")
            first = max(_segments(playlist))
            await asyncio.sleep(5.0)  # five segment durations (HLS_TIME 1 s), the watchdog's 3 passed
            assert max(_segments(playlist)) >= first + 4, playlist.read_text()
            assert _metric(mixer, "mixer_ffmpeg_stall_restarts_total") == 0

            await speak(before.janus_room_id)

            async def tone_segment(after: int) -> int | None:
                for number, (name, iv) in sorted(_segments(playlist).items()):
                    if number > after:
                        stats = await asyncio.to_thread(_tone_in, playlist.parent / name, key, iv)
                        if _is_tone(stats):
                            return number
                return None

            await eventually(lambda: tone_segment(first), 10, "a segment carrying the tone")
            # The new forwarder's RTP timestamps start over: an FFmpeg kept across the rebuild
            # writes nothing until they pass where the old stream ended, i.e. for about as long
            # as the room was on air. 15 s on air makes that longer than the 10 s allowed.
            await asyncio.sleep(max(0.0, forwarding_at + ROOM_AGE_AT_KILL_S - time.monotonic()))
            last_before_kill = max(_segments(playlist))

            # kill -9 Janus and start it again (a supervisor would)
            await asyncio.to_thread(private_janus.kill)
            killed_at = time.monotonic()
            await speakers[-1].stop()  # its Janus session died with Janus
            await asyncio.to_thread(private_janus.start)
            janus_up_s = time.monotonic() - killed_at

            async def rebuilt() -> records.JanusRecord | None:
                rec = await _forwarding(store, room_id)
                changed = rec is not None and rec.forwarder_stream_id != before.forwarder_stream_id
                return rec if changed else None

            await eventually(rebuilt, 10, "room rebuilt with a new forwarder")
            after = await rebuilt()
            assert after is not None and after.janus_room_id is not None
            rebuilt_s = time.monotonic() - killed_at
            # the anchors reconnect when told (janus_restarted): the speaker joins again
            await speak(after.janus_room_id)

            # The segment in progress at the kill (last_before_kill + 1) holds audio from before
            # it: the old FFmpeg completes it when it is stopped. Only later segments are the new
            # FFmpeg's, on the rebuilt room's stream.
            old_ffmpeg_last = last_before_kill + 1
            first_new_s: float | None = None
            tone_s: float | None = None
            deadline = killed_at + 10.0
            while time.monotonic() < deadline and tone_s is None:
                if first_new_s is None and max(_segments(playlist), default=-1) > old_ffmpeg_last:
                    first_new_s = time.monotonic() - killed_at
                if await tone_segment(old_ffmpeg_last) is not None:
                    tone_s = time.monotonic() - killed_at
                await asyncio.sleep(0.1)
            logger.warning(
                "Janus kill -9: Janus up again after %.2f s, room rebuilt after %.2f s, first new "
                "segment after %s s, first segment with the tone after %s s (Janus room %d -> %d)",
                janus_up_s,
                rebuilt_s,
                None if first_new_s is None else round(first_new_s, 2),
                None if tone_s is None else round(tone_s, 2),
                before.janus_room_id,
                after.janus_room_id,
            )
            assert tone_s is not None, (
                f"no new segment with the tone within 10 s of the kill (first new segment: {first_new_s}); "
                f"playlist:\n{playlist.read_text()}\nmixer log:\n{mixer.log_tail()}"
            )
    finally:
        for speaker in speakers:
            await speaker.stop()
        await clients.aclose()
        await asyncio.to_thread(mixer.cleanup)
