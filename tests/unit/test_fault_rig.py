"""The fault rig's pure parts (tests/faults/rig.py): playlist parsing and when a room counts as
heard again."""

from __future__ import annotations

from pathlib import Path

from tests.faults.rig import BREAK_S, HlsWatch, Segment, candidates, largest_gap, recorded_after_fault

IV1, IV2 = "1" * 32, "2" * 32
PLAYLIST = f"""#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-KEY:METHOD=AES-128,URI="http://127.0.0.1:8080/hls/rooms/r1/enc.key",IV=0x{IV1}
#EXTINF:2.000000,
segment_7.ts
#EXTINF:1.200000,
segment_8.ts
#EXT-X-DISCONTINUITY
#EXT-X-KEY:METHOD=AES-128,URI="http://127.0.0.1:8080/hls/rooms/r1/enc.key",IV=0x{IV2}
#EXTINF:2.000000,
segment_9.ts
"""


def seg(number: int, at: float, disc: bool = False) -> Segment:
    return Segment(number, f"segment_{number}.ts", IV1, at, disc)


def test_watch_notes_each_segment_once_with_its_iv_and_discontinuity(tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "stream.m3u8").write_text(PLAYLIST)
    watch = HlsWatch(tmp_path, ["r1", "r2"])
    watch.poll()
    watch.poll()
    got = [(s.number, s.iv, s.after_discontinuity) for s in watch.segments["r1"]]
    assert got == [(7, IV1, False), (8, IV1, False), (9, IV2, True)]
    assert watch.segments["r2"] == []


def test_the_first_new_segment_may_hold_audio_from_before_the_fault() -> None:
    assert recorded_after_fault([seg(5, 1.0), seg(6, 3.0)]) == [seg(6, 3.0)]
    # an FFmpeg started after the fault: its first segment is recorded after it
    assert recorded_after_fault([seg(9, 2.5, disc=True)]) == [seg(9, 2.5, disc=True)]


def test_candidates_start_after_the_last_stall_and_none_while_stalled() -> None:
    # the last segment of a stopped FFmpeg (6), then a stall, then the new FFmpeg (9, 10)
    new = [seg(5, 0.3), seg(6, 0.5), seg(9, 0.5 + BREAK_S + 0.5, disc=True), seg(10, 6.0)]
    assert candidates(new, now=6.5) == new[2:]
    assert candidates(new[:2], now=0.5 + BREAK_S + 0.1) == []
    assert candidates([], now=1.0) == []


def test_largest_gap() -> None:
    assert largest_gap([1.0, 3.0, 7.5, 9.0]) == 4.5
    assert largest_gap([1.0]) == 0.0
