"""The mixer's FFmpeg health check on a fake clock: every room assigned here needs a running
FFmpeg, except a room waiting out its restart backoff; an exit marks the room missing until the
restart (first exit: restart due at once) or until its backoff ends."""

from __future__ import annotations

from typing import cast

from svc_mixer.ffmpeg import FfmpegProcess
from svc_mixer.service import FfmpegCount, Mixer, RoomSpec, _Room
from tests.unit.svc_mixer.fakes import FakeProc, MixerSetup


def _add(mixer: Mixer, room_id: str) -> tuple[_Room, FakeProc]:
    proc = FakeProc()
    room = _Room(
        spec=RoomSpec(room_id=room_id, nonce="n"), port=10000, forwarder=None, proc=cast(FfmpegProcess, proc)
    )
    mixer._rooms[room_id] = room
    return room, proc


def test_every_assigned_room_needs_a_running_ffmpeg(
    setup: MixerSetup,
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
    setup: MixerSetup,
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


def test_watchdog_running_follows_its_task(setup: MixerSetup) -> None:
    mixer, _, _ = setup
    assert not mixer.watchdog_running


async def test_the_watchdog_is_supervised_and_stops_with_the_mixer(
    setup: MixerSetup,
) -> None:
    mixer, _, _ = setup
    mixer.start_watchdog()
    assert mixer.watchdog_running
    watchdog = mixer._watchdog
    assert watchdog is not None and watchdog.name == "ffmpeg-output-watchdog"
    await mixer.aclose()
    assert not mixer.watchdog_running
