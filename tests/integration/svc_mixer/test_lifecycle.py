"""Mixer supervision and cleanup with real FFmpeg, etcd and NATS: crashes, restarts, removal."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from common import records
from common.keys import StateKey
from common.state import StateStore
from svc_mixer.procs import cmdline_of
from tests.integration.eventcore import eventually
from tests.integration.svc_mixer.mixer_helpers import (
    MixerProcess,
    ffmpeg_pids_of,
    janus_record,
    onair,
    put_livemeta,
    removing,
    unique_id,
)
from tests.servers_nginx import send_tone

pytestmark = [pytest.mark.ffmpeg, pytest.mark.slow]


def _segments(playlist: Path) -> list[int]:
    try:
        return [int(n) for n in re.findall(r"^segment_(\d+)\.ts$", playlist.read_text(), re.MULTILINE)]
    except OSError:
        return []


def _media_sequence(playlist: Path) -> int:
    m = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", playlist.read_text())
    assert m
    return int(m.group(1))


def _newer_than(playlist: Path, number: int) -> Callable[[], bool]:
    def check() -> bool:
        return max(_segments(playlist), default=-1) > number

    return check


async def _record(store: StateStore, room: str) -> records.MixerRecord | None:
    found = await store.get(StateKey("rooms", room, "mixer"))
    return found.record if found else None


async def _port_of(store: StateStore, room: str, timeout_s: float = 10) -> int:
    await eventually(lambda: _record(store, room), timeout_s, f"mixer record of {room}")
    rec = await _record(store, room)
    assert rec is not None
    return rec.port


@pytest.fixture
def senders() -> Iterator[list[Any]]:
    procs: list[Any] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


async def test_killed_ffmpeg_restarts_and_playlist_continues(
    store: StateStore, make_mixer: Callable[..., MixerProcess], senders: list[Any]
) -> None:
    mixer = make_mixer()
    await asyncio.to_thread(mixer.start)
    room = unique_id("crash")
    await put_livemeta(store, room, onair(mixer.mixer_id))
    port = await _port_of(store, room)
    senders.append(send_tone(port, seconds=60))
    playlist = mixer.hls_dir / room / "stream.m3u8"
    await eventually(lambda: len(_segments(playlist)) >= 2, 8, "first segments")
    before = max(_segments(playlist))
    seq_before = _media_sequence(playlist)
    pid = mixer.ffmpeg_pid(room)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    await eventually(lambda: (p := mixer.ffmpeg_pid(room)) is not None and p != pid, 10, "ffmpeg restarted")
    await eventually(
        lambda: max(_segments(playlist), default=-1) > before + 1, 10, "new segments after restart"
    )
    assert _media_sequence(playlist) >= seq_before
    numbers = _segments(playlist)
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    # the same port: the forwarder keeps working
    assert await _port_of(store, room) == port
    assert "ffmpeg_restarts" in (await asyncio.to_thread(_health, mixer))


def _health(mixer: MixerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{mixer.url}/health", timeout=2) as r:
        body: dict[str, Any] = json.loads(r.read())
    return body


async def test_killed_mixer_leaves_no_orphans_and_resumes(
    store: StateStore, make_mixer: Callable[..., MixerProcess], senders: list[Any]
) -> None:
    mixer = make_mixer()
    await asyncio.to_thread(mixer.start)
    rooms = [unique_id("resume"), unique_id("resume")]
    ports = {}
    for room in rooms:
        await put_livemeta(store, room, onair(mixer.mixer_id))
    for room in rooms:
        ports[room] = await _port_of(store, room)
        senders.append(send_tone(ports[room], seconds=60))
    for room in rooms:
        await eventually(
            _newer_than(mixer.hls_dir / room / "stream.m3u8", -1), 8, "segments before the crash"
        )
    old = {room: mixer.ffmpeg_pid(room) for room in rooms}
    last = {room: max(_segments(mixer.hls_dir / room / "stream.m3u8")) for room in rooms}
    assert all(old.values())

    mixer.kill()
    # a crash leaves the FFmpegs running: that is what the restart must clean up
    assert all(cmdline_of(pid) is not None for pid in old.values() if pid)
    await asyncio.to_thread(mixer.start)

    for room in rooms:
        playlist = mixer.hls_dir / room / "stream.m3u8"
        await eventually(_newer_than(playlist, last[room] + 1), 10, f"{room} segments again")
        assert await _port_of(store, room) == ports[room]
    assert all(cmdline_of(pid) is None for pid in old.values() if pid), "orphan ffmpeg survived"
    running = ffmpeg_pids_of(str(mixer.state_dir))
    assert sorted(running) == sorted(p for r in rooms if (p := mixer.ffmpeg_pid(r)) is not None)
    assert len(running) == len(rooms)


async def test_removed_room_is_torn_down_and_deleted_room_dir_goes(
    store: StateStore, make_mixer: Callable[..., MixerProcess], senders: list[Any]
) -> None:
    mixer = make_mixer()
    await asyncio.to_thread(mixer.start)
    room = unique_id("remove")
    await put_livemeta(store, room, onair(mixer.mixer_id))
    port = await _port_of(store, room)
    senders.append(send_tone(port, seconds=60))
    playlist = mixer.hls_dir / room / "stream.m3u8"
    await eventually(lambda: len(_segments(playlist)) >= 1, 8, "segments")
    pid = mixer.ffmpeg_pid(room)
    assert pid is not None

    await put_livemeta(store, room, removing())
    await eventually(lambda: cmdline_of(pid) is None, 10, "ffmpeg gone")
    await eventually(lambda: "#EXT-X-ENDLIST" in playlist.read_text(), 5, "playlist ended")
    await eventually(lambda: _no_record(store, room), 5, "mixer record deleted")
    ports_file = json.loads((mixer.state_dir / "ports.json").read_text())
    assert room not in ports_file["rooms"]
    assert not list((mixer.state_dir / "keys").glob(f"{room}.*"))
    assert not (mixer.state_dir / "rooms" / f"{room}.sdp").exists()
    sender = senders.pop()
    sender.kill()
    sender.wait()
    # the port is really free: nothing holds the RTP/RTCP pair
    for p in (port, port + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", p))

    # the room is deleted altogether: its HLS dir goes after the grace period (2 s here)
    await store.delete(StateKey("rooms", room, "livemeta"))
    await eventually(lambda: not playlist.parent.exists(), 10, "HLS dir removed after the grace")


async def _no_record(store: StateStore, room: str) -> bool:
    return await _record(store, room) is None


async def test_new_forwarder_restarts_ffmpeg(
    store: StateStore, make_mixer: Callable[..., MixerProcess], senders: list[Any]
) -> None:
    mixer = make_mixer()
    await asyncio.to_thread(mixer.start)
    room = unique_id("fwd")
    await put_livemeta(store, room, onair(mixer.mixer_id))
    # RTP flows, as it does while a janus record says forwarding (else the watchdog restarts it)
    senders.append(send_tone(await _port_of(store, room), seconds=60))
    await store.put(StateKey("rooms", room, "janus"), janus_record(1001))
    await asyncio.sleep(0.5)
    first = mixer.ffmpeg_pid(room)
    assert first is not None
    # a status change of the same forwarder is not a new stream
    await store.put(StateKey("rooms", room, "janus"), janus_record(1001))
    await asyncio.sleep(0.5)
    assert mixer.ffmpeg_pid(room) == first
    # a new Janus room (Janus restarted): FFmpeg must start clean
    await store.put(StateKey("rooms", room, "janus"), janus_record(2002, generation=1, stream_id=7))
    await eventually(lambda: (p := mixer.ffmpeg_pid(room)) is not None and p != first, 10, "ffmpeg restarted")
    assert cmdline_of(first) is None
    second = mixer.ffmpeg_pid(room)
    # the room rebuilt under the same Janus room id with a new forwarder: a new RTP stream too
    await store.put(StateKey("rooms", room, "janus"), janus_record(2002, generation=1, stream_id=8))
    await eventually(lambda: mixer.ffmpeg_pid(room) not in (None, second), 10, "ffmpeg restarted")
    third = mixer.ffmpeg_pid(room)
    # the forwarder stopped (room_created) and the same one named again: nothing new
    created = attrs.evolve(janus_record(2002, generation=1), status=records.JanusStatus.ROOM_CREATED)
    await store.put(StateKey("rooms", room, "janus"), created)
    await store.put(StateKey("rooms", room, "janus"), janus_record(2002, generation=1, stream_id=8))
    await asyncio.sleep(0.5)
    assert mixer.ffmpeg_pid(room) == third


async def test_room_moved_here_starts_ffmpeg_once(
    store: StateStore, make_mixer: Callable[..., MixerProcess], senders: list[Any]
) -> None:
    """A room migrated to this mixer: its janus record still names the forwarder to the previous
    mixer (generation 0) until svc_janus moves it here (generation 1, a new stream id). That new
    forwarder is the stream the FFmpeg was started for, not a replacement: no restart."""
    mixer = make_mixer()
    await asyncio.to_thread(mixer.start)
    room = unique_id("movedin")
    await store.put(StateKey("rooms", room, "janus"), janus_record(1001, generation=0, stream_id=5))
    await put_livemeta(store, room, onair(mixer.mixer_id, generation=1))
    senders.append(send_tone(await _port_of(store, room), seconds=60))
    await eventually(lambda: mixer.ffmpeg_pid(room) is not None, 10, "ffmpeg started")
    first = mixer.ffmpeg_pid(room)
    await store.put(StateKey("rooms", room, "janus"), janus_record(1001, generation=1, stream_id=6))
    await asyncio.sleep(1.0)
    assert mixer.ffmpeg_pid(room) == first
    assert "forwarder changed" not in mixer.log_tail(20000)


async def test_exhausted_port_pool_retries_the_room_later(
    store: StateStore, make_mixer: Callable[..., MixerProcess]
) -> None:
    mixer = make_mixer(ports=2)  # one RTP/RTCP pair
    await asyncio.to_thread(mixer.start)
    first, second = unique_id("full"), unique_id("full")
    await put_livemeta(store, first, onair(mixer.mixer_id))
    await _port_of(store, first)
    await put_livemeta(store, second, onair(mixer.mixer_id))
    await asyncio.sleep(1.5)
    assert await _record(store, second) is None
    assert "RTP port pool exhausted" in mixer.log_tail(20000)
    # freeing the port lets the scheduler's retry place the second room
    await put_livemeta(store, first, removing())
    port = await _port_of(store, second, timeout_s=15)
    assert port == mixer.port_start


async def test_room_moved_to_another_mixer_is_released_without_ending_the_stream(
    store: StateStore, make_mixer: Callable[..., MixerProcess], senders: list[Any]
) -> None:
    mixer = make_mixer()
    await asyncio.to_thread(mixer.start)
    room = unique_id("moved")
    await put_livemeta(store, room, onair(mixer.mixer_id))
    port = await _port_of(store, room)
    senders.append(send_tone(port, seconds=30))
    playlist = mixer.hls_dir / room / "stream.m3u8"
    await eventually(lambda: len(_segments(playlist)) >= 1, 8, "segments")
    pid = mixer.ffmpeg_pid(room)
    assert pid is not None

    await put_livemeta(store, room, onair("mixer-elsewhere", generation=1))
    await eventually(lambda: cmdline_of(pid) is None, 10, "ffmpeg gone")
    await eventually(lambda: _no_record(store, room), 5, "this mixer's record deleted")
    assert room not in json.loads((mixer.state_dir / "ports.json").read_text())["rooms"]
    # the stream continues on the other mixer: no ENDLIST from this one
    assert "#EXT-X-ENDLIST" not in playlist.read_text()
