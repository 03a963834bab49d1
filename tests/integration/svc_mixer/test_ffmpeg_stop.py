"""FfmpegProcess.stop ends a room's FFmpeg at once, without SIGKILL, with its output complete:
the segment being written at the stop is finished and listed in a non-empty playlist. Three
inputs: RTP flowing, RTP stopped a second before the stop (svc_janus removes the forwarder
first), RTP never started. (A signal alone leaves the last two in their input read for ~9 s.)"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from svc_mixer.ffmpeg import PLAYLIST_NAME, FfmpegProcess, HlsParams, build_argv, keyinfo_text, rtcp_address
from svc_mixer.hls import ENDLIST
from svc_mixer.sdp import render_sdp
from tests.integration.eventcore import eventually
from tests.servers import find_binary
from tests.servers_janus import free_udp_range
from tests.servers_nginx import send_tone

pytestmark = [pytest.mark.ffmpeg]

STOP_TIMEOUT_S = 2.0  # FFMPEG_STOP_TIMEOUT's default: the old stop SIGKILLed at this deadline


def _params(tmp_path: Path, port: int) -> HlsParams:
    sdp = tmp_path / "room.sdp"
    sdp.write_text(render_sdp("stop", port))
    key = tmp_path / "enc.key"
    key.write_bytes(bytes(16))
    keyinfo = tmp_path / "keyinfo"
    keyinfo.write_text(keyinfo_text("http://127.0.0.1/key", key, bytes(16)))
    out = tmp_path / "hls"
    out.mkdir()
    return HlsParams(
        sdp_path=sdp,
        keyinfo_path=keyinfo,
        out_dir=out,
        hls_time_s=1.0,
        ffmpeg_bin=find_binary("ffmpeg"),
        bind_address="127.0.0.1",
    )


@pytest.mark.parametrize("rtp", ["flowing", "stopped", "never"])
async def test_stop_is_quick_clean_and_completes_the_last_segment(tmp_path: Path, rtp: str) -> None:
    first, _ = free_udp_range()
    port = first + first % 2
    params = _params(tmp_path, port)
    proc = FfmpegProcess(build_argv(params), name=f"stop-{rtp}", rtcp=rtcp_address(params, port))
    await proc.start()
    sender = None if rtp == "never" else send_tone(port, seconds=30)
    try:
        if sender is None:
            await asyncio.sleep(1.5)
            assert proc.is_running and proc.last_segment is None
        else:
            # segment 0 done, segment 1 (or later) being written: the stop must finish it
            await eventually(lambda: (proc.last_segment or 0) >= 1, 10, "a second segment started")
            await asyncio.sleep(0.4)
            if rtp == "stopped":
                sender.kill()
                sender.wait()
                await asyncio.sleep(1.0)
        assert proc.is_running
        started = time.monotonic()
        code = await proc.stop(STOP_TIMEOUT_S)
        took = time.monotonic() - started
    finally:
        if sender is not None:
            sender.kill()
            sender.wait()
    tail = " | ".join(proc.tail)
    assert code == 0, f"exit {code} (negative: killed by that signal); last output: {tail}"
    assert took < 1.0, f"FFmpeg took {took:.2f} s to stop"
    playlist = (params.out_dir / PLAYLIST_NAME).read_text()
    listed = re.findall(r"^(segment_\d+\.ts)$", playlist, re.MULTILINE)
    assert listed, f"empty playlist: {playlist!r}"
    assert listed[-1] == f"segment_{proc.last_segment}.ts", f"last segment not listed: {playlist}"
    assert all((params.out_dir / name).is_file() for name in listed)
    assert not list(params.out_dir.glob("*.tmp")), "a segment or playlist left half-written"
    assert ENDLIST not in playlist  # the mixer writes it itself when the room ends
    if rtp != "never":
        last = (params.out_dir / listed[-1]).stat().st_size
        assert last > 0
