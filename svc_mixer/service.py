"""The mixer's domain: one supervised FFmpeg per room it serves, its port and its files.

A room's stream is its FFmpeg, RTP port and files. ``Mixer.ensure_stream(spec)`` makes it run
(idempotent): it reserves the room's RTP port, writes the SDP, the AES key (``common.hlskey``)
and the key info with a fresh IV, and starts FFmpeg; it restarts FFmpeg when it has exited,
when the room's key changed (new livemeta nonce), when the Janus forwarder feeding it changed
(a new RTP stream: FFmpeg would stall ~30 s on the new timestamps) and when the output watchdog
found it stalled. ``Mixer.teardown_stream`` stops FFmpeg (RTCP BYE, SIGKILL after a timeout:
``FfmpegProcess.stop``), ends the playlist with ``#EXT-X-ENDLIST``, removes the room's state
files and frees its port.

When FFmpeg exits on its own the mixer does not restart it here: it calls ``on_exit(room,
delay_s)`` and the reconciler's scheduler runs the room again after that delay (exponential
while FFmpeg keeps dying young), so retries live in one place. Segment numbers continue across
restarts (the highest number seen, +1).

The output watchdog (``Mixer.check_output``, every ``min(1 s, HLS_TIME / 2)`` while
``start_watchdog`` runs) looks at every running room that is fed (its janus record says
``forwarding``): when FFmpeg wrote no new segment for ``STALL_SEGMENTS`` segment durations since
the later of its start and its last segment, the room is marked with the reason and handed to
``on_exit(room, delay)``, so the restart runs through the scheduler and ``ensure_stream`` like any
other. The first stall restarts at once; stalls in a row (the input is gone: Janus down, its
forwarder not replaced yet) back off like crashes do, until a new segment ends the episode. A
room nobody forwards to is not watched: without input FFmpeg has nothing to write.
AudioBridge forwards the mix continuously (``always_on``), silence included, so a fed FFmpeg
writes segments even when nobody speaks.

Files (``STATE_DIR``): ``rooms/<id>.sdp``, ``keys/<id>.key`` (0600), ``keys/<id>.keyinfo``,
``procs/<id>.json`` (pid file), ``ports.json``. HLS output: ``HLS_DIR/<id>/``. This module
imports no NATS, etcd or web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs
from prometheus_client import Counter, Gauge

from common.backoff import backoff_delay
from common.errors import Unavailable
from common.hlskey import derive_hls_key
from common.supervisor import SupervisedTask
from svc_mixer import hls
from svc_mixer.ffmpeg import (
    PLAYLIST_NAME,
    FfmpegProcess,
    HlsParams,
    build_argv,
    keyinfo_text,
    process_cpu_seconds,
    rtcp_address,
)
from svc_mixer.ports import PortPool
from svc_mixer.procs import ProcessRegistry
from svc_mixer.sdp import render_sdp

__all__ = [
    "STALL_SEGMENTS",
    "FfmpegCount",
    "Forwarder",
    "Mixer",
    "MixerSettings",
    "RoomSpec",
    "restart_delay_s",
    "stalled_for",
]

logger = logging.getLogger(__name__)

# An FFmpeg that ran this long before exiting counts as healthy: its next restart is immediate.
HEALTHY_RUN_S = 10.0

FFMPEG_RESTARTS = Counter("mixer_ffmpeg_restarts_total", "FFmpeg processes restarted for a running room")
FFMPEG_EXITS = Counter("mixer_ffmpeg_unexpected_exits_total", "FFmpeg exits the mixer did not ask for")
FFMPEG_STALLS = Counter(
    "mixer_ffmpeg_stall_restarts_total", "FFmpeg processes restarted because they wrote no new segment"
)
ROOMS_RUNNING = Gauge("mixer_rooms_running", "rooms with a running FFmpeg")

# A fed FFmpeg that wrote no new segment for this many segment durations is restarted.
STALL_SEGMENTS = 3
WATCHDOG_MAX_INTERVAL_S = 1.0


def restart_delay_s(crashes: int) -> float:
    """Delay before restarting an FFmpeg that died young ``crashes`` times in a row: the first
    restart is immediate, then the project's one backoff (0.2 s, 0.4 s, ... capped at 10 s)."""
    return 0.0 if crashes <= 1 else backoff_delay(crashes - 1)


def stalled_for(now: float, since: float, hls_time_s: float) -> float | None:
    """Seconds without a new segment if that makes a stall, else None.

    ``since`` is the later of the FFmpeg's start and its last new segment (monotonic clock).
    """
    quiet = now - since
    return quiet if quiet >= STALL_SEGMENTS * hls_time_s else None


@attrs.frozen
class Forwarder:
    """What feeds the room's RTP: a new forwarder (stream id), Janus room or Janus means a new
    RTP stream. ``stream_id`` is None in records written before svc_janus recorded it."""

    janus_id: str
    janus_room_id: int | None
    generation: int
    stream_id: int | None = None


@attrs.frozen(kw_only=True)
class RoomSpec:
    """What should run for one room (from its livemeta and janus records)."""

    room_id: str
    nonce: str
    generation: int = 0
    forwarder: Forwarder | None = None


@attrs.frozen(kw_only=True)
class MixerSettings:
    hls_dir: Path
    state_dir: Path
    host: str
    key_base_url: str
    hls_key_secret: str
    rtp_port_start: int
    rtp_port_end: int
    hls_time_s: float = 2.0
    hls_list_size: int = 5
    audio_bitrate: str = "48k"
    audio_channels: int = 1
    audio_sample_rate: int = 24000
    ffmpeg_bin: str = "ffmpeg"
    stop_timeout_s: float = 2.0


@attrs.define
class _Room:
    spec: RoomSpec
    port: int
    forwarder: Forwarder | None  # the last forwarder seen (spec.forwarder: the current one)
    proc: FfmpegProcess | None = None
    watcher: asyncio.Task[None] | None = None
    next_number: int = 0
    crashes: int = 0
    starts: int = 0
    is_stopping: bool = False
    started_at: float = 0.0  # the watchdog's clock
    last_segment_at: float = 0.0
    restart_reason: str = ""  # set by the watchdog until ensure_stream restarts FFmpeg
    stalls: int = 0  # watchdog restarts in a row without a new segment in between
    restart_at: float = 0.0  # after an exit: when the restart is due (the clock of ``Mixer``)


@attrs.frozen
class FfmpegCount:
    """The health view of the FFmpegs: rooms that should run here against those that do.

    A room waiting out its restart backoff is counted apart (it is being handled); ``missing``
    names every other assigned room without a running FFmpeg.
    """

    expected: int
    running: int
    backoff: list[str]
    missing: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing


class Mixer:
    """The rooms this mixer runs; see the module doc."""

    def __init__(
        self,
        settings: MixerSettings,
        *,
        on_exit: Callable[[str, float], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._on_exit = on_exit
        self._clock = clock
        self._watchdog: SupervisedTask | None = None
        state = settings.state_dir
        self.pool = PortPool(settings.rtp_port_start, settings.rtp_port_end, state / "ports.json")
        self.registry = ProcessRegistry(state / "procs")
        self._rooms_dir = state / "rooms"
        self._keys_dir = state / "keys"
        self._rooms: dict[str, _Room] = {}
        self.restarts = 0
        self.stall_restarts = 0

    # -- queries -------------------------------------------------------------------------------

    def room_ids(self) -> list[str]:
        return sorted(self._rooms)

    def running_count(self) -> int:
        return sum(1 for r in self._rooms.values() if r.proc is not None and r.proc.is_running)

    def streams(self) -> int:
        """Rooms this mixer serves (the heartbeat's ``streams``)."""
        return len(self._rooms)

    @property
    def watchdog_running(self) -> bool:
        return self._watchdog is not None and self._watchdog.is_running

    def ffmpeg_count(self, assigned: Iterable[str]) -> FfmpegCount:
        """Compare the rooms assigned to this mixer (etcd's view) with the FFmpegs running."""
        now = self._clock()
        expected = sorted(set(assigned))
        running = 0
        backoff: list[str] = []
        missing: list[str] = []
        for room_id in expected:
            room = self._rooms.get(room_id)
            if room is not None and room.proc is not None and room.proc.is_running:
                running += 1
            elif room is not None and room.proc is not None and room.restart_at > now:
                backoff.append(room_id)
            else:
                missing.append(room_id)
        return FfmpegCount(len(expected), running, backoff, missing)

    def pid_of(self, room_id: str) -> int | None:
        room = self._rooms.get(room_id)
        return room.proc.pid if room and room.proc and room.proc.is_running else None

    def cpu_seconds(self) -> float:
        """CPU time so far of the FFmpegs running now."""
        return sum(
            process_cpu_seconds(pid) or 0.0
            for r in self._rooms.values()
            if r.proc is not None and (pid := r.proc.pid) is not None and r.proc.is_running
        )

    def out_dir(self, room_id: str) -> Path:
        return self.settings.hls_dir / room_id

    # -- lifecycle -----------------------------------------------------------------------------

    async def recover(self) -> list[int]:
        """At start: kill the FFmpegs a previous run left, reload the port reservations."""
        killed = await self.registry.kill_orphans()
        self.pool.load()
        return killed

    def start_watchdog(self) -> None:
        """Run :meth:`check_output` periodically until :meth:`aclose` (restarted if a bug ends it)."""
        if self._watchdog is None:
            self._watchdog = SupervisedTask("ffmpeg-output-watchdog", self._watch_output)
            self._watchdog.start()

    async def _watch_output(self) -> None:
        interval_s = min(WATCHDOG_MAX_INTERVAL_S, self.settings.hls_time_s / 2)
        while True:
            await asyncio.sleep(interval_s)
            self.check_output()

    def check_output(self) -> list[str]:
        """Mark every fed room whose FFmpeg stalled and hand it to ``on_exit`` for a restart;
        returns the rooms marked now."""
        now = self._clock()
        stalled: list[str] = []
        for room_id, room in self._rooms.items():
            proc = room.proc
            if proc is None or not proc.is_running or room.is_stopping or room.restart_reason:
                continue
            if room.spec.forwarder is None:
                continue  # nothing forwards to this room: no output expected
            quiet = stalled_for(now, max(room.started_at, room.last_segment_at), self.settings.hls_time_s)
            if quiet is None:
                continue
            room.restart_reason = f"no new segment for {quiet:.0f} s"
            room.stalls += 1
            self.stall_restarts += 1
            FFMPEG_STALLS.inc()
            # While its input is gone for good (Janus down, forwarder not yet replaced) a room
            # stalls again and again: back off, and warn once per episode, not per restart.
            delay = restart_delay_s(room.stalls)
            logger.log(
                logging.WARNING if room.stalls == 1 else logging.INFO,
                "ffmpeg of room %s (pid %s) stalled: %s (last segment %s, stall %d in a row); "
                "restarting it in %.1f s",
                room_id,
                proc.pid,
                room.restart_reason,
                proc.last_segment,
                room.stalls,
                delay,
            )
            stalled.append(room_id)
            self._on_exit(room_id, delay)
        return stalled

    async def aclose(self) -> None:
        """Stop every FFmpeg (the service is shutting down); ports and playlists stay as they are.

        The playlists get no ENDLIST and the reservations are kept: a mixer started again
        resumes each room on the same port, and the forwarder keeps working.
        """
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            await watchdog.stop()
        await asyncio.gather(*(self._halt(room) for room in list(self._rooms.values())))
        self._rooms.clear()
        ROOMS_RUNNING.set(0)

    # -- rooms ---------------------------------------------------------------------------------

    async def ensure_stream(self, spec: RoomSpec) -> int:
        """Make the room run as ``spec`` says; returns its RTP port. Idempotent."""
        room = self._rooms.get(spec.room_id)
        if room is None:
            port = self.pool.reserve(spec.room_id)
            room = _Room(spec=spec, port=port, forwarder=spec.forwarder)
            room.next_number = self._first_number(spec.room_id)
            self._rooms[spec.room_id] = room
            await self._start(room, reason="room assigned")
            return room.port
        reason = ""
        if spec.nonce != room.spec.nonce:
            reason = "room key changed (new nonce)"
        elif spec.forwarder is not None and room.forwarder is not None and spec.forwarder != room.forwarder:
            reason = f"forwarder changed {room.forwarder} -> {spec.forwarder}"
        elif room.restart_reason:
            reason = room.restart_reason
        if spec.forwarder is not None:
            room.forwarder = spec.forwarder
        room.spec = spec
        if reason:
            await self._halt(room)
            room.crashes = 0
            await self._start(room, reason=reason)
        elif room.proc is None or not room.proc.is_running:
            await self._start(room, reason="ffmpeg exited")
        return room.port

    async def teardown_stream(self, room_id: str, *, end_playlist: bool = True) -> bool:
        """Stop the room's FFmpeg (if it runs), end its playlist, remove its files, free its port.

        ``end_playlist=False`` (the room moved to another mixer, which may write the same HLS
        dir and continue the playlist) leaves the playlist open. Idempotent; also cleans up a room
        this run never started (left by a previous run). Returns True when something was done.
        """
        room = self._rooms.pop(room_id, None)
        if room is not None:
            await self._halt(room)
        playlist = self.out_dir(room_id) / PLAYLIST_NAME
        ended = end_playlist and hls.end_playlist(playlist)
        for path in self._files(room_id):
            path.unlink(missing_ok=True)
        self.registry.forget(room_id)
        port = self.pool.release(room_id)
        ROOMS_RUNNING.set(self.running_count())
        if room is not None or port is not None or ended:
            logger.info("room %s stopped: port %s freed, playlist ended=%s", room_id, port, ended)
            return True
        return False

    # -- internals -----------------------------------------------------------------------------

    def _files(self, room_id: str) -> tuple[Path, Path, Path]:
        return (
            self._rooms_dir / f"{room_id}.sdp",
            self._keys_dir / f"{room_id}.key",
            self._keys_dir / f"{room_id}.keyinfo",
        )

    def _first_number(self, room_id: str) -> int:
        out = self.out_dir(room_id)
        if hls.has_endlist(out / PLAYLIST_NAME):
            # an ended stream of an earlier run of this room: start a new one from scratch
            hls.remove_dir(out)
            return 0
        last = hls.last_segment_number(out)
        return 0 if last is None else last + 1

    def _write_files(self, room: _Room) -> HlsParams:
        s = self.settings
        room_id = room.spec.room_id
        sdp_path, key_path, keyinfo_path = self._files(room_id)
        for d in (self._rooms_dir, self._keys_dir, self.out_dir(room_id)):
            d.mkdir(parents=True, exist_ok=True)
        sdp_path.write_text(render_sdp(room_id, room.port, s.host))
        key = derive_hls_key(s.hls_key_secret, room_id, room.spec.nonce)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        key_uri = f"{s.key_base_url.rstrip('/')}/{room_id}/enc.key"
        # a fresh IV per start: the same key never encrypts two streams with the same IV
        keyinfo_path.write_text(keyinfo_text(key_uri, key_path, secrets.token_bytes(16)))
        return HlsParams(
            sdp_path=sdp_path,
            keyinfo_path=keyinfo_path,
            out_dir=self.out_dir(room_id),
            start_number=room.next_number,
            hls_time_s=s.hls_time_s,
            hls_list_size=s.hls_list_size,
            audio_bitrate=s.audio_bitrate,
            audio_channels=s.audio_channels,
            audio_sample_rate=s.audio_sample_rate,
            ffmpeg_bin=s.ffmpeg_bin,
            bind_address=_ipv4_or_empty(s.host),
        )

    async def _start(self, room: _Room, *, reason: str) -> None:
        room_id = room.spec.room_id
        params = self._write_files(room)
        argv = build_argv(params)

        def seen(number: int) -> None:
            room.next_number = max(room.next_number, number + 1)
            room.last_segment_at = self._clock()
            room.stalls = 0

        proc = FfmpegProcess(argv, name=room_id, on_segment=seen, rtcp=rtcp_address(params, room.port))
        try:
            pid = await proc.start()
        except OSError as exc:
            raise Unavailable(f"cannot start ffmpeg: {exc}", room_id=room_id, ffmpeg=argv[0]) from exc
        self.registry.record(room_id, pid, argv)
        room.proc = proc
        room.starts += 1
        room.is_stopping = False
        room.started_at = self._clock()
        room.restart_reason = ""
        if room.starts > 1:
            self.restarts += 1
            FFMPEG_RESTARTS.inc()
        room.watcher = asyncio.create_task(self._watch(room, proc), name=f"ffmpeg-watch-{room_id}")
        ROOMS_RUNNING.set(self.running_count())
        logger.info(
            "ffmpeg started for room %s (pid %d, port %d, first segment %d): %s",
            room_id,
            pid,
            room.port,
            params.start_number,
            reason,
        )

    async def _watch(self, room: _Room, proc: FfmpegProcess) -> None:
        code = await proc.wait()
        room_id = room.spec.room_id
        ROOMS_RUNNING.set(self.running_count())
        if room.is_stopping or self._rooms.get(room_id) is not room or room.proc is not proc:
            return
        self.registry.forget(room_id)
        FFMPEG_EXITS.inc()
        ran_s = time.monotonic() - proc.started_at
        room.crashes = 0 if ran_s >= HEALTHY_RUN_S else room.crashes + 1
        delay = restart_delay_s(room.crashes)
        room.restart_at = self._clock() + delay
        logger.warning(
            "ffmpeg of room %s exited with %s after %.1f s; restart in %.1f s; last output: %s",
            room_id,
            code,
            ran_s,
            delay,
            " | ".join(proc.tail),
        )
        if any("bind failed" in line for line in proc.tail):
            # another program holds the port: give this room another one
            self.pool.avoid(room.port)
            self.pool.release(room_id)
            room.port = self.pool.reserve(room_id)
        self._on_exit(room_id, delay)

    async def _halt(self, room: _Room) -> None:
        room.is_stopping = True
        proc, watcher = room.proc, room.watcher
        room.proc = room.watcher = None
        if proc is not None:
            await proc.stop(self.settings.stop_timeout_s)
            self.registry.forget(room.spec.room_id)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _ipv4_or_empty(host: str) -> str:
    """``host`` if it is an IPv4 address FFmpeg can bind to, else "" (a name binds everywhere)."""
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        return ""
