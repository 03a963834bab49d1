"""FfmpegProcess.stop ends a room's FFmpeg that never got RTP input at once and without SIGKILL
(FFmpeg 7.1, Debian 13, ignores a single SIGTERM then; 5.1 did not)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from svc_mixer.ffmpeg import FfmpegProcess, HlsParams, build_argv, keyinfo_text
from svc_mixer.sdp import render_sdp
from tests.servers import find_binary
from tests.servers_janus import free_udp_range

pytestmark = [pytest.mark.ffmpeg]


async def test_stop_without_input_needs_no_sigkill(tmp_path: Path) -> None:
    first, _ = free_udp_range()
    port = first + first % 2
    sdp = tmp_path / "room.sdp"
    sdp.write_text(render_sdp("stop", port))
    key = tmp_path / "enc.key"
    key.write_bytes(bytes(16))
    keyinfo = tmp_path / "keyinfo"
    keyinfo.write_text(keyinfo_text("http://127.0.0.1/key", key, bytes(16)))
    out = tmp_path / "hls"
    out.mkdir()
    params = HlsParams(
        sdp_path=sdp,
        keyinfo_path=keyinfo,
        out_dir=out,
        ffmpeg_bin=find_binary("ffmpeg"),
        bind_address="127.0.0.1",
    )
    proc = FfmpegProcess(build_argv(params), name="stop")
    await proc.start()
    await asyncio.sleep(1.5)
    assert proc.is_running and proc.last_segment is None
    started = time.monotonic()
    code = await proc.stop(5.0)
    took = time.monotonic() - started
    assert code is not None and code >= 0, f"killed by signal {-code if code else '?'}"
    assert took < 2.0, f"FFmpeg took {took:.1f} s to stop"
