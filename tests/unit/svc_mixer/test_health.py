"""The mixer's FFmpeg health check on a fake clock: every room assigned here needs a running
FFmpeg, except a room waiting out its restart backoff; an exit marks the room missing until the
restart (first exit: restart due at once) or until its backoff ends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import pytest

from svc_mixer.ffmpeg import FfmpegProcess
from svc_mixer.service import FfmpegCount, Mixer, MixerSettings, RoomSpec, _Room


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeProc:
    """What the health check and the exit watcher read of an FfmpegProcess."""

    def __init__(self) -> None:
        self.is_running = True
        self.pid = 4242
        self.started_at = time.monotonic()  # a young process: its exit counts as a crash
        self.tail: list[str] = ["killed"]

    async def wait(self) -> int:
        self.is_running = False
        return -9


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Mixer, FakeClock, list[tuple[str, float]]]:
    clock = FakeClock()
    restarts: list[tuple[str, float]] = []
    settings = MixerSettings(
        hls_dir=tmp_path / "hls",
        state_dir=tmp_path / "state",
        host="127.0.0.1",
        key_base_url="http://127.0.0.1/hls/rooms/",
        hls_key_secret="k" * 32,
        rtp_port_start=10000,
        rtp_port_end=10010,
    )
    mixer = Mixer(settings, on_exit=lambda room, delay: restarts.append((room, delay)), clock=clock)
    return mixer, clock, restarts


def _add(mixer: Mixer, room_id: str) -> tuple[_Room, FakeProc]:
    proc = FakeProc()
    room = _Room(
        spec=RoomSpec(room_id=room_id, nonce="n"), port=10000, forwarder=None, proc=cast(FfmpegProcess, proc)
    )
    mixer._rooms[room_id] = room
    return room, proc


def test_every_assigned_room_needs_a_running_ffmpeg(
    setup: tuple[Mixer, FakeClock, list[tuple[str, float]]],
) -> None:
    mixer, _, _ = setup
    assert mixer.ffmpeg_count([]) == FfmpegCount(0, 0, [], [])
    _add(mixer, "r1")
    _add(mixer, "r2")
    assert mixer.ffmpeg_count(["r1", "r2"]) == FfmpegCount(2, 2, [], [])
    assert mixer.ffmpeg_count(["r1", "r2"]).ok
    # assigned in etcd but not started here (yet, or its start failed)
    count = mixer.ffmpeg_count(["r1", "r2", "r3"])
    assert count == FfmpegCount(3, 2, [], ["r3"]) and not count.ok
    # a room held here but no longer assigned is not expected
    assert mixer.ffmpeg_count(["r1"]) == FfmpegCount(1, 1, [], [])


async def test_an_exit_is_missing_until_restarted_unless_in_backoff(
    setup: tuple[Mixer, FakeClock, list[tuple[str, float]]],
) -> None:
    mixer, clock, restarts = setup
    room, proc = _add(mixer, "r1")
    await mixer._watch(room, cast(FfmpegProcess, proc))
    # first young exit: restart due at once, so the room is missing until the reconcile restarts it
    assert restarts == [("r1", 0.0)]
    assert mixer.ffmpeg_count(["r1"]) == FfmpegCount(1, 0, [], ["r1"])
    # second young exit: a backoff delay, during which the room is excused
    proc.is_running = True
    await mixer._watch(room, cast(FfmpegProcess, proc))
    delay = restarts[-1][1]
    assert delay > 0
    assert mixer.ffmpeg_count(["r1"]) == FfmpegCount(1, 0, ["r1"], [])
    clock.now += delay  # the restart is due and did not happen
    assert mixer.ffmpeg_count(["r1"]) == FfmpegCount(1, 0, [], ["r1"])


def test_watchdog_running_follows_its_task(setup: tuple[Mixer, FakeClock, list[tuple[str, float]]]) -> None:
    mixer, _, _ = setup
    assert not mixer.watchdog_running


async def test_the_watchdog_is_supervised_and_stops_with_the_mixer(
    setup: tuple[Mixer, FakeClock, list[tuple[str, float]]],
) -> None:
    mixer, _, _ = setup
    mixer.start_watchdog()
    assert mixer.watchdog_running
    watchdog = mixer._watchdog
    assert watchdog is not None and watchdog.name == "ffmpeg-output-watchdog"
    await mixer.aclose()
    assert not mixer.watchdog_running
