"""The output watchdog with real FFmpeg, etcd and NATS: an FFmpeg that stops writing segments
(SIGSTOP) while its room is fed is restarted after three segment durations, through the
scheduler, counted in /metrics and logged with the reason; a room fed with audio is left alone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.keys import StateKey
from common.state import StateStore
from svc_mixer.procs import cmdline_of
from tests.integration.eventcore import eventually
from tests.integration.svc_mixer.mixer_helpers import (
    MixerProcess,
    janus_record,
    onair,
    put_livemeta,
    unique_id,
)
from tests.servers_nginx import send_tone

pytestmark = [pytest.mark.ffmpeg, pytest.mark.slow]

HLS_TIME_S = 1.0  # MixerProcess's HLS_TIME


def _segments(playlist: Path) -> list[int]:
    try:
        return [int(n) for n in re.findall(r"^segment_(\d+)\.ts$", playlist.read_text(), re.MULTILINE)]
    except OSError:
        return []


def _metric(mixer: MixerProcess, name: str) -> float:
    with urllib.request.urlopen(f"{mixer.url}/metrics", timeout=2) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


async def _port_of(store: StateStore, room: str) -> int:
    async def record() -> Any:
        found = await store.get(StateKey("rooms", room, "mixer"))
        return found.record if found else None

    await eventually(record, 10, f"mixer record of {room}")
    rec = await record()
    return int(rec.port)


@pytest.fixture
def stopped() -> Iterator[list[int]]:
    """Pids the test SIGSTOPped: continued (and so able to die) after the test."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def test_stalled_ffmpeg_is_restarted_after_three_segment_durations(
    store: StateStore, make_mixer: Callable[..., MixerProcess], stopped: list[int]
) -> None:
    mixer = make_mixer()
    await asyncio.to_thread(mixer.start)
    room = unique_id("stall")
    await put_livemeta(store, room, onair(mixer.mixer_id))
    # the room is fed: svc_janus says it forwards, and RTP arrives
    await store.put(StateKey("rooms", room, "janus"), janus_record(4321, stream_id=11))
    sender = send_tone(await _port_of(store, room), seconds=60)
    try:
        playlist = mixer.hls_dir / room / "stream.m3u8"
        await eventually(lambda: len(_segments(playlist)) >= 2, 8, "first segments")
        await asyncio.sleep(4 * HLS_TIME_S)  # a fed, healthy FFmpeg is never restarted
        assert _metric(mixer, "mixer_ffmpeg_stall_restarts_total") == 0
        pid = mixer.ffmpeg_pid(room)
        assert pid is not None

        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        stopped_at = time.monotonic()
        last = max(_segments(playlist))
        await eventually(
            lambda: (p := mixer.ffmpeg_pid(room)) is not None and p != pid, 15, "ffmpeg restarted"
        )
        restarted_s = time.monotonic() - stopped_at
        # 3 segment durations since the last segment, + the watchdog period, + SIGTERM->SIGKILL
        # of the stopped process (FFMPEG_STOP_TIMEOUT 2 s)
        assert 3 * HLS_TIME_S - 1.0 <= restarted_s <= 3 * HLS_TIME_S + 1.0 + 2.0 + 1.5, restarted_s
        assert cmdline_of(pid) is None
        assert _metric(mixer, "mixer_ffmpeg_stall_restarts_total") == 1
        log = mixer.log_tail(50_000)
        assert re.search(rf"WARNING .*ffmpeg of room {room} .*stalled: no new segment for \d+ s", log), log
        assert re.search(rf"ffmpeg started for room {room} .*: no new segment for \d+ s", log), log
        await eventually(lambda: max(_segments(playlist), default=-1) > last, 8, "segments again")
    finally:
        sender.kill()
        sender.wait()
