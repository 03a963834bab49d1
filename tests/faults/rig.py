"""One fault at a time against the whole supervised stack, and what converging means.

Shared by the fault suite (tests/faults/test_faults.py) and ``just bench faults``
(tests/bench/group_faults.py), so both inject the same faults and measure them the same way.

``Rig`` starts the stack as `just up` does (infra/stack.py on free ports in a temporary run
dir, every component under supervisord), creates ``ROOMS`` rooms through svc_rooms' REST API
and puts a plain-RTP speaker in each (FFmpeg sending its own sine as Opus RTP to an AudioBridge
participant that joined with the room's pin: ``Speakers``). A listener's view of every room is
followed all the time (``HlsWatch``: when each segment first appears in the room's playlist;
nginx serves these very files). ``Rig.run_fault`` injects one ``Fault`` and waits until the
stack has converged again:

- every room's HLS advances again and carries its speaker's tone: a segment recorded after the
  fault (one that follows another new segment, or the discontinuity of an FFmpeg started after
  the fault) is fetched through nginx with a viewer token and the room's key from svc_users,
  decrypted, decoded, and its level at the room's frequency is loud and well above every other
  room's frequency;
- etcd holds the same rooms as before, each once: livemeta on air on the same Janus and mixer
  with the same generation and nonce (a fault that moves rooms says where to), and a janus
  record (forwarding) and a mixer record (ready) of that generation;
- Janus has exactly one AudioBridge room per room, the one the janus record names, with exactly
  one RTP forwarder, to the port the mixer record names; no other room;
- exactly one FFmpeg per room writes its HLS, and it is a child of a live svc_mixer (an FFmpeg
  left by a killed mixer is an orphan);
- no ``migrated`` event unless the fault moves rooms (then one per moved room);
- every supervised component is RUNNING and answers its health check, and every module's
  heartbeat is in etcd, healthy.

Then it must stay so (each room lists one more segment with its tone, the checks hold again),
and the control plane must work (``Rig.probe``): a new room gets on air; an anchor, through nginx
like a browser, gets a user from svc_users, opens a gateway WebSocket, ``join``s (a Janus
session) and reports ``onair`` until svc_users lists it so (Redis, NATS), and ``leave``s; the
room, deleted, is gone from etcd, Janus and the mixers.

``Outcome.recover_s`` is fault -> every room's HLS carries its tone again: per room, the first
segment with the tone that was recorded after the fault (one that follows another new segment,
or the discontinuity of an FFmpeg started after the fault) in the run of segments that goes on
without a gap over ``BREAK_S`` (so the last segment a stopped FFmpeg completes does not count
when a stall follows it). ``converged_s`` is fault -> all of the above but the staying and the
probe. ``hls_gap_s`` is the longest time any room's playlist listed no new segment, from its
last segment before the fault to convergence. Segments are ``HLS_TIME_S`` long, so a fault that
disturbs nothing still reads 2-4 s of recover_s (the segment in progress at the fault holds
audio from before it; the next one is the first recorded after it) and ~2 s of gap.

**Speakers after a Janus restart.** A plain-RTP participant lives in its Janus session: when
Janus restarts it is gone, and svc_janus rebuilds the AudioBridge room without it. ``Speakers``
rejoins the way an anchor does when svc_gateway relays ``reconnect {reason: janus_restarted}``:
it listens to ``rtc.events.rooms.*.janus_restarted`` and, every ``SPEAKER_CHECK_S`` in case an
event is missed (NATS may be the fault), compares its Janus session and the AudioBridge room it
joined with the room's janus record; when they differ it joins the room the record names again
(with the pin) and restarts its FFmpeg towards the new participant's RTP port.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import attrs
import httpx
import nats
import websockets
from nats.aio.msg import Msg

from common import records
from common.errors import AppError
from common.etcd import EtcdStore
from common.keys import Keyspace
from common.media import OPUS_PAYLOAD_TYPE
from svc_janus.audiobridge import AudioBridge
from svc_janus.janus_ws import JanusClient
from svc_janus.service import room_secret
from tests.e2e.gateway_proc import ServiceProcess
from tests.e2e.hls import KEY_LINE
from tests.e2e.tones import tone_levels
from tests.servers_nginx import PCM_RATE, decode_pcm, tone_argv
from tests.stackutil import Stack, stack

__all__ = [
    "BREAK_S",
    "CONVERGE_S",
    "FAULTS",
    "GRACE_S",
    "HLS_TIME_S",
    "ROOMS",
    "Fault",
    "HlsWatch",
    "Outcome",
    "Rig",
    "Segment",
    "candidates",
    "largest_gap",
    "recorded_after_fault",
]

logger = logging.getLogger(__name__)

ROOMS = 10
CONVERGE_S = 15.0  # the bound: every fault converges within it
SETTLE_S = 60.0  # how long run_fault keeps watching a fault that did not converge in time
HLS_TIME_S = 2.0  # svc_mixer's default HLS_TIME
# The stack's MODULE_GRACE_PERIOD: long enough for a SIGTERMed svc_janus or svc_mixer to be back
# (about 3 s on 2 cores), short enough that a mixer staying away has its rooms moved and heard
# again within CONVERGE_S of its stop.
GRACE_S = 7.0
JANUS_ID = "janus1"
MIXER_ID = "mixer1"
MIXER2_ID = "mixer2"
SPEAKER_CHECK_S = 0.5
WATCH_INTERVAL_S = 0.2
POLL_S = 0.3
# A playlist that lists no new segment for this long has stalled (segments come every HLS_TIME_S).
BREAK_S = HLS_TIME_S + 1.0
# A room carries its tone when the level at its frequency is at least TONE_MIN_DBFS and
# TONE_MARGIN_DB above the loudest other room's frequency (a mix-up of rooms fails too).
TONE_MIN_DBFS = -35.0
TONE_MARGIN_DB = 15.0
MIGRATED_FILTER = "rtc.events.rooms.*.migrated"
SERVICES = ("svc_rooms", "svc_janus", "svc_mixer", "svc_users", "svc_gateway")

_ENTRY = re.compile(
    r'^#EXT-X-KEY:METHOD=AES-128,URI="[^"]*",IV=0x(?P<iv>[0-9a-f]{32})$'
    r"|^(?P<disc>#EXT-X-DISCONTINUITY)$"
    r"|^(?P<name>segment_(?P<number>\d+)\.ts)$"
)


def room_ids(n: int = ROOMS) -> list[str]:
    return [f"fault-{i:02d}" for i in range(n)]


def frequency_of(index: int) -> int:
    return 300 + 70 * index  # 300 .. 930 Hz for 10 rooms: apart by far more than a scan bin


# -- a listener's view: new segments as they appear ---------------------------------------------


@dataclass(frozen=True)
class Segment:
    number: int
    name: str
    iv: str
    seen_at: float  # monotonic: when the playlist first listed it
    after_discontinuity: bool  # the first segment of an FFmpeg run (append_list)


class HlsWatch:
    """Reads every room's playlist every ``WATCH_INTERVAL_S`` and notes new segments."""

    def __init__(self, hls_dir: Path, rooms: Sequence[str]) -> None:
        self.hls_dir = hls_dir
        self.segments: dict[str, list[Segment]] = {r: [] for r in rooms}
        self._known: dict[str, set[int]] = {r: set() for r in rooms}
        self._task: asyncio.Task[None] | None = None

    def poll(self) -> None:
        now = time.monotonic()
        for room, known in self._known.items():
            try:
                text = (self.hls_dir / room / "stream.m3u8").read_text()
            except OSError:
                continue
            iv, disc = "", False
            for line in text.splitlines():
                m = _ENTRY.match(line)
                if m is None:
                    continue
                if m.group("iv"):
                    iv = m.group("iv")
                elif m.group("disc"):
                    disc = True
                else:
                    number = int(m.group("number"))
                    if number not in known:
                        known.add(number)
                        self.segments[room].append(Segment(number, m.group("name"), iv, now, disc))
                    disc = False

    async def _run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(WATCH_INTERVAL_S)

    def after(self, room: str, t0: float) -> list[Segment]:
        return [s for s in self.segments[room] if s.seen_at > t0]

    def last_before(self, room: str, t0: float) -> float | None:
        times = [s.seen_at for s in self.segments[room] if s.seen_at <= t0]
        return times[-1] if times else None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="hls-watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def recorded_after_fault(new: Sequence[Segment]) -> list[Segment]:
    """The new segments (listed after the fault, in order) whose audio was recorded after it:
    the first one may have been in progress at the fault, every later one started after it, and
    one after a discontinuity came from an FFmpeg started after the fault."""
    return [s for i, s in enumerate(new) if i > 0 or s.after_discontinuity]


def candidates(new: Sequence[Segment], now: float) -> list[Segment]:
    """The segments of ``new`` (listed after the fault, in order) that may show the room heard
    again: recorded after the fault and in the run that goes on to ``now`` without a gap over
    ``BREAK_S``; none while the room's playlist has stalled."""
    if not new or now - new[-1].seen_at > BREAK_S:
        return []
    run_start = new[0].seen_at
    for a, b in itertools.pairwise(new):
        if b.seen_at - a.seen_at > BREAK_S:
            run_start = b.seen_at
    return [seg for seg in recorded_after_fault(new) if seg.seen_at >= run_start]


def largest_gap(times: Sequence[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


# -- speakers -------------------------------------------------------------------------------


@attrs.define
class Speaker:
    room_id: str
    pin: str
    frequency_hz: int
    joined: tuple[int, int] | None = None  # (Janus session number, AudioBridge room id)
    handle_id: int = 0
    proc: asyncio.subprocess.Process | None = None
    joins: int = 0

    @property
    def is_playing(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop_tone(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class Speakers:
    """One plain-RTP speaker per room, rejoining like an anchor (see the module doc)."""

    def __init__(self, janus_ws_url: str, etcd: EtcdStore, speakers: Sequence[Speaker]) -> None:
        self.client = JanusClient(janus_ws_url, request_timeout_s=5, name="fault-speakers")
        self.etcd = etcd
        self.keyspace = Keyspace()
        self.by_room = {s.room_id: s for s in speakers}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def janus_records(self) -> dict[str, records.JanusRecord]:
        snap = await self.etcd.get_prefix(self.keyspace.rooms)
        out: dict[str, records.JanusRecord] = {}
        for kv in snap.kvs:
            key = self.keyspace.parse(kv.key)
            if key is not None and key.kind == "janus":
                out[key.id] = records.decode_record("janus", kv.value, key=kv.key)
        return out

    async def check(self) -> None:
        session = self.client.session
        if session is None:
            return
        janus = await self.janus_records()
        for sp in self.by_room.values():
            rec = janus.get(sp.room_id)
            if rec is None or rec.janus_room_id is None or rec.status is not records.JanusStatus.FORWARDING:
                continue
            if sp.joined == (session.number, rec.janus_room_id) and sp.is_playing:
                continue
            try:
                await self._join(sp, rec.janus_room_id, session.number)
            except AppError as exc:  # Janus room not rebuilt yet, Janus away: the next check
                logger.info("speaker %s: join of Janus room %d: %s", sp.room_id, rec.janus_room_id, exc)

    async def _join(self, sp: Speaker, janus_room_id: int, session_number: int) -> None:
        await sp.stop_tone()
        if sp.joined is not None and sp.joined[0] == session_number and sp.handle_id:
            with contextlib.suppress(AppError):  # leaves the old room in the same session
                await self.client.detach(sp.handle_id)
        sp.joined, sp.handle_id = None, 0
        sp.handle_id = await self.client.attach()
        joined = await self.client.message_async(
            {
                "request": "join",
                "room": janus_room_id,
                "pin": sp.pin,
                "display": f"tone-{sp.frequency_hz}",
                "rtp": {"payload_type": OPUS_PAYLOAD_TYPE},
            },
            handle_id=sp.handle_id,
        )
        port = int(joined["rtp"]["port"])
        sp.proc = await asyncio.create_subprocess_exec(
            *tone_argv(port, frequency=sp.frequency_hz),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        sp.joined = (session_number, janus_room_id)
        sp.joins += 1
        logger.info("speaker %s: joined Janus room %d (join %d)", sp.room_id, janus_room_id, sp.joins)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SPEAKER_CHECK_S):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.check()
            except AppError as exc:  # etcd away (a fault): the next check
                logger.info("speakers: check failed: %s", exc)

    async def __aenter__(self) -> Self:
        await self.client.__aenter__()
        await self.client.wait_connected(10)
        self._task = asyncio.create_task(self._run(), name="speakers")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sp in self.by_room.values():
            await sp.stop_tone()
        await self.client.aclose()


# -- a second mixer -------------------------------------------------------------------------


class SecondMixer(ServiceProcess):
    """``python -m svc_mixer`` as mixer2 on the stack's servers, writing into the stack's HLS dir
    (which nginx serves), with its own state dir and RTP ports."""

    module = "svc_mixer"

    def __init__(self, s: Stack, log: Path, state_dir: Path) -> None:
        super().__init__(s, log)
        start = int(s.env["MIXER_RTP_PORT_END"])
        self.env.update(
            {
                "HTTP_ADDR": f"127.0.0.1:{self.port}",
                "MIXER_ID": MIXER2_ID,
                "MIXER_IP": "127.0.0.1",
                "RTP_PORT_START": str(start),
                "RTP_PORT_END": str(start + 200),
                "HLS_DIR": str(s.run_dir / "hls"),
                "STATE_DIR": str(state_dir),
                "KEY_BASE_URL": f"http://127.0.0.1:{s.port('NGINX_PORT')}/hls/rooms/",
                "HLS_KEY_SECRET": self.secrets["HLS_KEY_SECRET"],
                "MIXER_CAPACITY": str(ROOMS + 2),
            }
        )


# -- faults -----------------------------------------------------------------------------------


Step = Callable[["Rig"], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    """``inject`` is the fault (the clock starts before it); ``prepare`` runs before the clock,
    ``finish`` after convergence (then everything is checked again). ``moves_mixer`` names the
    mixer the rooms must end up on (one ``migrated`` event each); ``keeps_down`` the components
    not expected to run until ``finish``."""

    name: str
    inject: Step
    prepare: Step | None = None
    finish: Step | None = None
    moves_mixer: str | None = None
    keeps_down: tuple[str, ...] = ()  # components the fault leaves stopped until ``finish``
    what: str = ""


def _kill(component: str) -> Step:
    async def inject(rig: Rig) -> None:
        pid = (await asyncio.to_thread(rig.stack.pids))[component]
        os.kill(pid, signal.SIGKILL)  # supervisord restarts it (autorestart)

    return inject


def _sigterm_restart(component: str) -> Step:
    async def inject(rig: Rig) -> None:
        await rig.supervisor("stopProcess", component, True)  # SIGTERM, waits for the exit
        await rig.supervisor("startProcess", component, True)

    return inject


async def _kill_one_ffmpeg(rig: Rig) -> None:
    room = rig.rooms[0]
    pids = rig.mixer_ffmpegs().get(room, [])
    assert len(pids) == 1, f"{room}: ffmpeg pids {pids}"
    os.kill(pids[0][0], signal.SIGKILL)


async def _start_mixer2(rig: Rig) -> None:
    await rig.start_mixer2()


async def _stop_mixer1(rig: Rig) -> None:
    await rig.supervisor("stopProcess", "svc_mixer", True)


async def _start_mixer1(rig: Rig) -> None:
    await rig.supervisor("startProcess", "svc_mixer", True)


FAULTS: tuple[Fault, ...] = (
    # the servers first: a service that silently lost its NATS consumer or etcd watch would then
    # fail the faults after them, which need events to converge
    Fault("kill_nats", _kill("nats"), what="kill -9 NATS"),
    Fault("kill_etcd", _kill("etcd"), what="kill -9 etcd"),
    Fault("kill_redis", _kill("redis"), what="kill -9 Redis"),
    *(Fault(f"kill_{c}", _kill(c), what=f"kill -9 {c}") for c in SERVICES),
    Fault("kill_janus", _kill("janus"), what="kill -9 Janus"),
    Fault("kill_ffmpeg", _kill_one_ffmpeg, what="kill -9 one room's FFmpeg"),
    Fault("restart_svc_janus", _sigterm_restart("svc_janus"), what="SIGTERM + start svc_janus"),
    Fault("restart_svc_mixer", _sigterm_restart("svc_mixer"), what="SIGTERM + start svc_mixer"),
    Fault(
        "mixer_away",
        _stop_mixer1,
        prepare=_start_mixer2,
        finish=_start_mixer1,
        moves_mixer=MIXER2_ID,
        keeps_down=("svc_mixer",),
        what="svc_mixer stopped past the grace period, a second mixer running",
    ),
)


# -- the rig ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    fault: str
    recover_s: float | None = None  # fault -> every room's HLS carries its tone again
    converged_s: float | None = None  # fault -> every check holds (None: not within SETTLE_S)
    hls_gap_s: float = 0.0
    per_room_s: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def report(self) -> str:
        rooms = " ".join(f"{r}={t:.1f}" for r, t in sorted(self.per_room_s.items()))
        return (
            f"{self.fault}: recover_s={self.recover_s} converged_s={self.converged_s} "
            f"hls_gap_s={self.hls_gap_s:.1f} rooms: {rooms} problems: {self.problems}"
        )


@attrs.frozen
class Expected:
    janus_id: str
    mixer_id: str
    generation: int
    nonce: str


class Rig:
    """The stack, its rooms and speakers, and the checks; ``async with Rig(work_dir)``."""

    def __init__(self, work_dir: Path, *, rooms: int = ROOMS) -> None:
        self.work_dir = work_dir
        self.rooms = room_ids(rooms)
        self.frequencies = {r: frequency_of(i) for i, r in enumerate(self.rooms)}
        self.stack = Stack(
            work_dir / "stack",
            {
                "MODULE_GRACE_PERIOD": f"{GRACE_S:g}s",
                # room for the probe room next to the ROOMS rooms (the default is 10)
                "JANUS_CAPACITY": str(ROOMS + 2),
                "MIXER_CAPACITY": str(ROOMS + 2),
            },
        )
        self.hls_dir = self.stack.run_dir / "hls"
        self.keyspace = Keyspace()
        self.expected: dict[str, Expected] = {}
        self.migrated_expected = 0
        self.mixer2: SecondMixer | None = None
        self._exit = contextlib.AsyncExitStack()
        self._tone_cache: dict[tuple[str, int], bool] = {}
        self._probes = 0
        self.http: httpx.AsyncClient
        self.etcd: EtcdStore
        self.nc: Any
        self.janus: JanusClient
        self.speakers: Speakers
        self.watch: HlsWatch
        self.admin_key = ""

    # -- setup ---------------------------------------------------------------------------------

    @property
    def rooms_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.port('SVC_ROOMS_PORT')}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.stack.port('NGINX_PORT')}"

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(*sys.exc_info())
            raise
        return self

    async def _start(self) -> None:
        self._exit.push_async_callback(asyncio.to_thread, self.stack.cleanup)
        await asyncio.to_thread(self.stack.up)
        run_dir = self.stack.run_dir
        secrets = dict(
            line.split("=", 1) for line in (run_dir / "secrets.env").read_text().splitlines() if "=" in line
        )
        self.admin_key = secrets["JANUS_ADMIN_KEY"].strip().strip("'\"")
        api_token = (run_dir / "api-token").read_text().strip()
        self.http = await self._exit.enter_async_context(
            httpx.AsyncClient(timeout=5, headers={"Authorization": f"Bearer {api_token}"})
        )
        self.etcd = await self._exit.enter_async_context(
            EtcdStore.open([f"127.0.0.1:{self.stack.port('ETCD_PORT')}"])
        )
        self.nc = await nats.connect(
            f"nats://127.0.0.1:{self.stack.port('NATS_PORT')}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
        )
        self._exit.push_async_callback(self.nc.close)
        janus_url = f"ws://127.0.0.1:{self.stack.port('JANUS_WS_PORT')}"
        self.janus = await self._exit.enter_async_context(
            JanusClient(janus_url, request_timeout_s=5, name="fault-inspector")
        )
        await self.janus.wait_connected(10)

        for room in self.rooms:
            pin = f"pin{self.rooms.index(room):03d}"
            r = await self.http.post(f"{self.rooms_url}/api/rooms", json={"roomId": room, "pin": pin})
            assert r.status_code == 201, r.text
        # one user per room, created before any fault: every fault must leave them in place
        self.users: dict[str, str] = {}
        for room in self.rooms:
            r = await self.http.post(f"{self.origin}/api/rooms/{room}/users", json={"role": "anchor"})
            assert r.status_code == 200, r.text
            self.users[room] = r.json()["userID"]
        self.watch = await self._exit.enter_async_context(HlsWatch(self.hls_dir, self.rooms))
        speakers = [Speaker(room, f"pin{i:03d}", self.frequencies[room]) for i, room in enumerate(self.rooms)]
        self.speakers = await self._exit.enter_async_context(Speakers(janus_url, self.etcd, speakers))

        async def on_restart(msg: Msg) -> None:
            self.speakers.wake()

        await self.nc.subscribe("rtc.events.rooms.*.janus_restarted", cb=on_restart)
        # on air: every room heard, every check holding (the baseline every fault returns to)
        t0 = time.monotonic()
        self.expected = {}
        deadline = t0 + 60
        while True:
            livemetas = await self._livemetas()
            if len(livemetas) == len(self.rooms):
                self.expected = {
                    r: Expected(m.janus_id, m.mixer_id, m.generation, m.nonce) for r, m in livemetas.items()
                }
            heard = await self._heard(t0)
            problems = await self.problems() if self.expected else ["rooms not on air"]
            if len(heard) == len(self.rooms) and not problems:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the rooms did not get on air: {problems}; heard {sorted(heard)}")
            await asyncio.sleep(POLL_S)
        self.migrated_expected = await self.migrated_count()
        logger.info("rig ready in %.1f s: %d rooms on air", time.monotonic() - t0, len(self.rooms))

    async def __aexit__(self, *exc: object) -> None:
        if self.mixer2 is not None:
            await self.mixer2.__aexit__(None, None, None)
            self.mixer2 = None
        await self._exit.aclose()

    async def start_mixer2(self) -> None:
        if self.mixer2 is None:
            mixer = SecondMixer(self.stack, self.work_dir / "mixer2.log", self.work_dir / "mixer2-state")
            await mixer.__aenter__()
            self.mixer2 = mixer

    async def supervisor(self, method: str, *args: Any) -> Any:
        return await asyncio.to_thread(stack.rpc, self.stack.settings, method, *args)

    # -- observations --------------------------------------------------------------------------

    async def _livemetas(self) -> dict[str, records.LiveMeta]:
        snap = await self.etcd.get_prefix(self.keyspace.rooms)
        out = {}
        for kv in snap.kvs:
            key = self.keyspace.parse(kv.key)
            if key is not None and key.kind == "livemeta":
                out[key.id] = records.decode_record("livemeta", kv.value, key=kv.key)
        return out

    def mixer_ffmpegs(self) -> dict[str, list[tuple[int, int]]]:
        """room -> [(pid, parent pid)] of the FFmpegs writing its HLS (any mixer)."""
        marker = f"{self.hls_dir}/"
        out: dict[str, list[tuple[int, int]]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if not argv or Path(argv[0].decode(errors="replace")).name != "ffmpeg":
                continue
            outputs = [a.decode(errors="replace") for a in argv if a.endswith(b"/stream.m3u8")]
            for path in outputs:
                if path.startswith(marker):
                    room = path[len(marker) :].split("/", 1)[0]
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                    out.setdefault(room, []).append((int(entry.name), ppid))
        return out

    async def migrated_count(self) -> int:
        info = await self.nc.jetstream().stream_info("RTC_EVENTS", subjects_filter=MIGRATED_FILTER)
        subjects = info.state.subjects or {}
        return int(sum(subjects.values()))

    async def _tone_ok(self, room: str, seg: Segment) -> bool:
        cached = self._tone_cache.get((room, seg.number))
        if cached is not None:
            return cached
        playlist = await self.http.get(f"{self.origin}/hls/{room}/stream.m3u8")
        key_line = KEY_LINE.search(playlist.text) if playlist.status_code == 200 else None
        token = await self.http.post(f"{self.origin}/api/token", json={"roomId": room})
        if key_line is None or token.status_code != 200:
            return False  # svc_users or nginx away: not heard yet, ask again (not cached)
        key = await self.http.get(
            key_line.group(1), headers={"Authorization": f"Bearer {token.json()['token']}"}
        )
        got = await self.http.get(f"{self.origin}/hls/{room}/{seg.name}")
        if key.status_code != 200 or len(key.content) != 16 or got.status_code != 200:
            return False  # not cached either: the next poll asks again
        path = self.work_dir / "segments" / f"{room}-{seg.name}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(got.content)
        try:
            pcm = await asyncio.to_thread(
                decode_pcm,
                ["-decryption_key", key.content.hex(), "-decryption_iv", seg.iv, "-i", f"crypto:{path}"],
            )
        except RuntimeError:
            ok = False
        else:
            levels = await asyncio.to_thread(tone_levels, pcm, PCM_RATE, self.frequencies.values())
            own = levels[self.frequencies[room]]
            others = max((v for f, v in levels.items() if f != self.frequencies[room]), default=-math.inf)
            ok = own >= TONE_MIN_DBFS and own >= others + TONE_MARGIN_DB
            if not ok:
                logger.info("%s %s: tone %.1f dBFS, other rooms' %.1f", room, seg.name, own, others)
        finally:
            path.unlink(missing_ok=True)
        self._tone_cache[(room, seg.number)] = ok
        return ok

    async def _heard(self, t0: float) -> dict[str, float]:
        """room -> when (monotonic) its HLS was heard again after ``t0``: the first segment with
        its tone, recorded after ``t0``, of the run of segments that continues to now without a
        gap over ``BREAK_S`` (a segment or two written while the fault was still unfolding, such
        as the last one of a stopped FFmpeg, do not count when a stall follows)."""
        now = time.monotonic()
        heard: dict[str, float] = {}
        for room in self.rooms:
            new = self.watch.after(room, t0)
            for seg in candidates(new, now):
                if await self._tone_ok(room, seg):
                    heard[room] = seg.seen_at
                    logger.debug(
                        "%s heard: %s",
                        room,
                        ", ".join(
                            f"{s.number}@{s.seen_at - t0:.1f}{'D' if s.after_discontinuity else ''}"
                            for s in new[: new.index(seg) + 1]
                        ),
                    )
                    break
        return heard

    async def problems(self, keeps_down: Sequence[str] = ()) -> list[str]:
        """Every check of the module doc but the tone; empty when all hold. ``keeps_down``:
        components a fault keeps stopped (not checked)."""
        found: list[str] = []
        snap = await self.etcd.get_prefix(self.keyspace.rooms)
        by_room: dict[str, dict[str, Any]] = {}
        for kv in snap.kvs:
            key = self.keyspace.parse(kv.key)
            if key is not None:
                by_room.setdefault(key.id, {})[str(key.kind)] = records.decode_record(
                    key.kind, kv.value, key=kv.key
                )
        if set(by_room) != set(self.rooms):
            found.append(f"etcd rooms {sorted(by_room)}")
        targets: dict[str, tuple[int, str, int]] = {}  # room -> (janus room, mixer host, port)
        for room in self.rooms:
            view = by_room.get(room, {})
            live, jrec, mrec = view.get("livemeta"), view.get("janus"), view.get("mixer")
            want = self.expected.get(room)
            if view.get("meta") is None or live is None or live.status is not records.LiveStatus.ONAIR:
                found.append(f"{room}: not on air ({live})")
                continue
            got = Expected(live.janus_id, live.mixer_id, live.generation, live.nonce)
            if want is not None and got != want:
                found.append(f"{room}: livemeta {got}, expected {want}")
            if (
                jrec is None
                or jrec.status is not records.JanusStatus.FORWARDING
                or jrec.janus_id != live.janus_id
                or jrec.generation != live.generation
                or jrec.janus_room_id is None
            ):
                found.append(f"{room}: janus record {jrec}")
                continue
            if mrec is None or mrec.id != live.mixer_id or mrec.generation != live.generation:
                found.append(f"{room}: mixer record {mrec}")
                continue
            targets[room] = (jrec.janus_room_id, mrec.host, mrec.port)
        found += await self._heartbeat_problems(keeps_down)
        found += await self._user_problems(keeps_down)
        found += await self._janus_problems(targets)
        found += await self._ffmpeg_problems()
        found += await self._component_problems(keeps_down)
        migrated = await self.migrated_count()
        if migrated != self.migrated_expected:
            found.append(f"{migrated} migrated events, expected {self.migrated_expected}")
        return found

    async def _user_problems(self, keeps_down: Sequence[str]) -> list[str]:
        """The users created at the start are still members of their rooms (svc_users, Redis)."""
        if "svc_users" in keeps_down or "redis" in keeps_down:
            return []
        found = []
        for room, user_id in self.users.items():
            try:
                r = await self.http.get(f"{self.origin}/api/rooms/{room}/users")
                members = (
                    {m["userId"] for m in r.json().get("members", [])} if r.status_code == 200 else set()
                )
            except (httpx.HTTPError, ValueError) as exc:
                found.append(f"{room}: users not listed ({exc!r})")
                continue
            if r.status_code != 200:
                found.append(f"{room}: users answered {r.status_code}")
            elif user_id not in members:
                found.append(f"{room}: user {user_id} lost")
        return found

    async def _janus_problems(self, targets: Mapping[str, tuple[int, str, int]]) -> list[str]:
        found: list[str] = []
        bridge = AudioBridge(self.janus, admin_key=self.admin_key)
        try:
            listed = await bridge.list_audiobridge_rooms()
        except AppError as exc:
            return [f"Janus rooms not listed: {exc}"]
        numbers: dict[str, list[int]] = {}
        for info in listed:
            numbers.setdefault(info.description, []).append(info.room)
        for description in sorted(set(numbers) - set(self.rooms)):
            found.append(f"orphan Janus room(s) {numbers[description]} ({description})")
        for room in self.rooms:
            have = numbers.get(room, [])
            target = targets.get(room)
            if target is None:
                continue
            if have != [target[0]]:
                found.append(f"{room}: Janus rooms {have}, the record names {target[0]}")
                continue
            secret = room_secret(self.admin_key, JANUS_ID, room, target[0])
            try:
                forwarders = await bridge.list_forwarders(target[0], secret=secret)
            except AppError as exc:
                found.append(f"{room}: forwarders not listed: {exc}")
                continue
            to = sorted((f.host, f.port) for f in forwarders)
            if to != [(target[1], target[2])]:
                found.append(f"{room}: forwarders to {to}, the mixer record says {target[1:]}")
        return found

    async def _ffmpeg_problems(self) -> list[str]:
        found: list[str] = []
        pids = await asyncio.to_thread(self.stack.pids)
        mixers = {p for p in (pids.get("svc_mixer"), self.mixer2.pid if self.mixer2 else None) if p}
        ffmpegs = await asyncio.to_thread(self.mixer_ffmpegs)
        for room in sorted(set(ffmpegs) | set(self.rooms)):
            procs = ffmpegs.get(room, [])
            if room not in self.rooms:
                found.append(f"orphan FFmpeg(s) {procs} for {room}")
            elif len(procs) != 1:
                found.append(f"{room}: {len(procs)} FFmpegs {procs}")
            elif procs[0][1] not in mixers:
                found.append(f"{room}: FFmpeg {procs[0][0]} is not a mixer's child (parent {procs[0][1]})")
        return found

    async def _heartbeat_problems(self, keeps_down: Sequence[str]) -> list[str]:
        modules = [("januses", JANUS_ID)]
        if "svc_mixer" not in keeps_down:
            modules.append(("mixers", MIXER_ID))
        if self.mixer2 is not None:
            modules.append(("mixers", MIXER2_ID))
        found = []
        for collection, module_id in modules:
            kv = await self.etcd.get(self.keyspace.module_key(collection, module_id, "heartbeat"))
            beat = None if kv is None else records.decode_record("heartbeat", kv.value, key=kv.key)
            if beat is None or beat.status is not records.ModuleStatus.HEALTHY:
                found.append(f"{collection}/{module_id}: heartbeat {beat}")
        return found

    async def _component_problems(self, keeps_down: Sequence[str]) -> list[str]:
        def check() -> list[str]:
            infos = stack.process_infos(self.stack.settings)
            bad = []
            for c in stack.COMPONENTS:
                if c.name in keeps_down:
                    continue
                state = infos.get(c.name, {}).get("statename")
                if state != "RUNNING" or not c.health.check(self.stack.settings):
                    bad.append(f"{c.name} {state}, not healthy")
            return bad

        return await asyncio.to_thread(check)

    # -- one fault -----------------------------------------------------------------------------

    async def run_fault(self, fault: Fault) -> Outcome:
        """Inject ``fault`` and watch until every check holds (at most SETTLE_S), then check that
        it stays so (one more segment per room) and that rooms can still be made and removed."""
        if fault.prepare is not None:
            await fault.prepare(self)
        t0 = time.monotonic()
        await fault.inject(self)
        logger.info("fault %s injected (%.1f s)", fault.name, time.monotonic() - t0)
        if fault.moves_mixer is not None:
            self.expected = {
                r: attrs.evolve(e, mixer_id=fault.moves_mixer, generation=e.generation + 1)
                for r, e in self.expected.items()
            }
            self.migrated_expected += len(self.rooms)
        out = Outcome(fault.name)
        heard, problems = await self._until_converged(t0, SETTLE_S, fault.keeps_down)
        end = time.monotonic()
        if len(heard) == len(self.rooms) and not problems:
            out.converged_s = round(end - t0, 2)
            out.recover_s = round(max(heard.values()) - t0, 2)
        out.per_room_s = {r: round(t - t0, 2) for r, t in heard.items()}
        out.hls_gap_s = round(max(self._gap(room, t0, end) for room in self.rooms), 2)
        out.problems = problems
        if out.converged_s is not None:
            # it stays converged: every room lists another segment with its tone, checks hold
            heard, problems = await self._until_converged(end, CONVERGE_S, fault.keeps_down)
            out.problems = [f"did not stay converged: {p}" for p in problems]
            if len(heard) < len(self.rooms):
                out.problems.append(f"did not stay converged: heard only {sorted(heard)}")
            if not out.problems:
                out.problems = await self.probe(fault.keeps_down)
        if fault.finish is not None and not out.problems:
            await fault.finish(self)
            _, problems = await self._until_converged(time.monotonic(), CONVERGE_S, ())
            out.problems = [f"after {fault.name}: {p}" for p in problems]
        logger.info("%s", out.report())
        return out

    async def _until_converged(
        self, t0: float, limit_s: float, keeps_down: Sequence[str]
    ) -> tuple[dict[str, float], list[str]]:
        heard: dict[str, float] = {}
        problems: list[str] = ["not checked"]
        while True:
            with contextlib.suppress(AppError, httpx.HTTPError, OSError, TimeoutError):
                # the fault may keep a check from answering (etcd, NATS, Janus away): ask again
                heard = await self._heard(t0)
                problems = await self.problems(keeps_down)
            if (len(heard) == len(self.rooms) and not problems) or time.monotonic() - t0 > limit_s:
                return heard, problems
            await asyncio.sleep(POLL_S)

    def _gap(self, room: str, t0: float, end: float) -> float:
        """The longest time ``room``'s playlist listed no new segment, from its last segment
        before ``t0`` to ``end``."""
        before = self.watch.last_before(room, t0)
        times = [t for t in [before] if t is not None]
        times += [s.seen_at for s in self.watch.after(room, t0) if s.seen_at <= end]
        return max(largest_gap(times), end - times[-1] if times else end - t0)

    async def probe(self, keeps_down: Sequence[str] = ()) -> list[str]:
        """The control plane works: a new room gets on air (a Janus room forwarding to a ready
        mixer) and, deleted, is gone from etcd, Janus and the mixers. Empty when it all happened
        within CONVERGE_S."""
        self._probes += 1
        room = f"probe-{self._probes:02d}"
        url = f"{self.rooms_url}/api/rooms/{room}"
        t0 = time.monotonic()
        r = await self.http.post(f"{self.rooms_url}/api/rooms", json={"roomId": room, "pin": "probe1"})
        if r.status_code != 201:
            return [f"{room}: create answered {r.status_code} {r.text}"]
        step = "on air"
        while time.monotonic() - t0 < CONVERGE_S:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                got = await self.http.get(url)
                body = got.json().get("room", {}) if got.status_code == 200 else {}
                if step == "on air":
                    if (
                        body.get("janus", {}).get("state") == "forwarding"
                        and body.get("mixer", {}).get("state") == "ready"
                    ):
                        anchor = await self._anchor_probe(room)
                        if anchor:
                            return anchor
                        deleted = await self.http.delete(url)
                        if deleted.status_code != 200:
                            return [f"{room}: delete answered {deleted.status_code} {deleted.text}"]
                        step = "gone"
                elif got.status_code == 404:
                    problems = await self.problems(keeps_down)
                    if not problems:
                        logger.info("%s: on air and gone in %.1f s", room, time.monotonic() - t0)
                        return []
            await asyncio.sleep(POLL_S)
        return [f"{room}: not {step} within {CONVERGE_S:g} s"]

    async def _anchor_probe(self, room: str) -> list[str]:
        """What an anchor does before WebRTC, through nginx like a browser: a user from
        svc_users (Redis), a gateway WebSocket, ``join`` (the room from etcd, a Janus session),
        ``keepalive onair`` (the lock in Redis, the status to svc_users over NATS) until
        svc_users lists the user on air, then ``leave``."""
        t0 = time.monotonic()
        users_url = f"{self.origin}/api/rooms/{room}/users"
        try:
            async with asyncio.timeout(CONVERGE_S):
                while True:  # svc_users may still be coming back (Redis, NATS reconnects)
                    created = await self.http.post(users_url, json={"role": "anchor"})
                    if created.status_code == 200:
                        break
                    await asyncio.sleep(POLL_S)
                user, token = created.json()["userID"], created.json()["token"]
                ws_url = f"ws://127.0.0.1:{self.stack.port('NGINX_PORT')}/ws?token={token}"
                async with websockets.connect(ws_url, additional_headers={"Origin": self.origin}) as ws:
                    ids = itertools.count(1)

                    async def call(method: str, params: Mapping[str, Any] | None = None) -> Any:
                        rid = next(ids)
                        await ws.send(
                            json.dumps(
                                {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}
                            )
                        )
                        while True:
                            msg = json.loads(await ws.recv())
                            if msg.get("id") == rid:
                                if "error" in msg:
                                    raise RuntimeError(f"{method}: {msg['error']}")
                                return msg.get("result")

                    await call("join", {"clientId": str(uuid.uuid4()), "pin": "probe1"})
                    while True:
                        await call("keepalive", {"status": "onair"})
                        listed = await self.http.get(users_url)
                        members = listed.json().get("members", []) if listed.status_code == 200 else []
                        if any(m.get("userId") == user and m.get("status") == "onair" for m in members):
                            break
                        await asyncio.sleep(POLL_S)
                    await call("leave")
        except (TimeoutError, RuntimeError, OSError, websockets.WebSocketException, httpx.HTTPError) as exc:
            return [f"{room}: anchor probe failed after {time.monotonic() - t0:.1f} s: {exc!r}"]
        logger.info("%s: anchor probe in %.1f s", room, time.monotonic() - t0)
        return []


def work_dir() -> tempfile.TemporaryDirectory[str]:
    """A short temporary dir (the stack's supervisord socket path must stay under 100 bytes)."""
    return tempfile.TemporaryDirectory(prefix="faults-")
