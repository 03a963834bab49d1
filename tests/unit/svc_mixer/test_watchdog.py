"""The output watchdog's rule on a fake clock: a fed room whose FFmpeg wrote no new segment for
three segment durations (since the later of its start and its last segment) is handed to the
scheduler once, with the reason; unfed, stopping or already marked rooms are left alone."""

from __future__ import annotations

from typing import cast

from svc_mixer.ffmpeg import FfmpegProcess
from svc_mixer.service import (
    FFMPEG_STALLS,
    STALL_SEGMENTS,
    Forwarder,
    Mixer,
    RoomSpec,
    _Room,
    stalled_for,
)
from tests.unit.svc_mixer.fakes import HLS_TIME_S, FakeClock, FakeProc, MixerSetup

FED = Forwarder("janus1", 123456, 1, 77)


def test_stall_rule() -> None:
    limit = STALL_SEGMENTS * HLS_TIME_S
    assert STALL_SEGMENTS == 3
    assert stalled_for(100.0, 100.0, HLS_TIME_S) is None
    assert stalled_for(100.0 + limit - 0.01, 100.0, HLS_TIME_S) is None
    assert stalled_for(100.0 + limit, 100.0, HLS_TIME_S) == limit
    assert stalled_for(100.0 + 9.5, 100.0, HLS_TIME_S) == 9.5


def _add(mixer: Mixer, clock: FakeClock, room_id: str, forwarder: Forwarder | None = FED) -> _Room:
    room = _Room(
        spec=RoomSpec(room_id=room_id, nonce="n", forwarder=forwarder),
        port=10000,
        forwarder=forwarder,
        proc=cast(FfmpegProcess, FakeProc()),
        started_at=clock.now,
    )
    mixer._rooms[room_id] = room
    return room


def test_a_fed_room_without_new_segments_is_restarted_once(
    setup: MixerSetup,
) -> None:
    mixer, clock, restarts = setup
    room = _add(mixer, clock, "r-stall")
    before = FFMPEG_STALLS._value.get()
    clock.now += 5.9  # segments arrive: the last one 0.1 s ago
    room.last_segment_at = clock.now - 0.1
    assert mixer.check_output() == []
    clock.now = room.last_segment_at + 5.99
    assert mixer.check_output() == []
    clock.now = room.last_segment_at + 6.0
    assert mixer.check_output() == ["r-stall"]
    assert restarts == [("r-stall", 0.0)]  # through the scheduler, at once
    assert room.restart_reason == "no new segment for 6 s"
    assert mixer.stall_restarts == 1 and FFMPEG_STALLS._value.get() == before + 1
    # marked until ensure_stream restarts it: not handed over twice
    clock.now += 10
    assert mixer.check_output() == [] and len(restarts) == 1


def test_the_start_counts_when_no_segment_came_yet(
    setup: MixerSetup,
) -> None:
    mixer, clock, _ = setup
    room = _add(mixer, clock, "r-new")
    clock.now += 5.0
    assert mixer.check_output() == []
    clock.now = room.started_at + 6.5
    assert mixer.check_output() == ["r-new"]
    assert room.restart_reason == "no new segment for 6 s"
    # a restarted FFmpeg: a later start counts, even though the last segment is older
    room.restart_reason = ""
    room.started_at = clock.now
    clock.now += 3.0
    assert mixer.check_output() == []


def test_unfed_stopping_and_exited_rooms_are_not_watched(
    setup: MixerSetup,
) -> None:
    mixer, clock, restarts = setup
    _add(mixer, clock, "r-unfed", forwarder=None)  # nothing forwards to it: no output expected
    stopping = _add(mixer, clock, "r-stopping")
    stopping.is_stopping = True
    exited = _add(mixer, clock, "r-exited")
    cast(FakeProc, exited.proc).is_running = False  # the exit watcher restarts it
    clock.now += 60
    assert mixer.check_output() == []
    assert restarts == []


def test_stalls_in_a_row_back_off_and_a_segment_resets_them(
    setup: MixerSetup,
) -> None:
    mixer, clock, restarts = setup
    room = _add(mixer, clock, "r-dead-input")
    for _ in range(4):  # the input stays gone: every restarted FFmpeg stalls again
        clock.now = room.started_at + 6.0
        assert mixer.check_output() == ["r-dead-input"]
        room.restart_reason = ""  # what ensure_stream's restart does
        room.started_at = clock.now
    assert [delay for _, delay in restarts] == [0.0, 0.2, 0.4, 0.8]
    assert room.stalls == 4
    room.stalls = 0  # a new segment (FfmpegProcess's on_segment) ends the episode
    clock.now = room.started_at + 6.0
    mixer.check_output()
    assert restarts[-1] == ("r-dead-input", 0.0)
