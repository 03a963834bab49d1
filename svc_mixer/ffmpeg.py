"""One room's FFmpeg: its argument list (built with ffmpeg-python), key info, process and logs.

The command reads the room's SDP (Opus RTP from the Janus forwarder) and writes AES-128 HLS::

    ffmpeg -protocol_whitelist file,udp,rtp -analyzeduration 0 -c:a libopus -i <sdp> -map 0:a
           -c:a aac -aac_coder fast -b:a 48k -ac 1 -f hls -hls_time 2 -hls_list_size 5
           -hls_flags delete_segments+append_list+omit_endlist+temp_file -start_number N
           -hls_key_info_file <keyinfo> -hls_segment_filename <dir>/segment_%d.ts <dir>/stream.m3u8

Why these flags:
- ``-analyzeduration 0``: the SDP says everything about the stream; probing would hold the
  first segment back by seconds.
- ``-c:a libopus`` before ``-i``: libopus decodes the forwarded Opus for ~0.5 % of a core less
  than FFmpeg 5.1's native Opus decoder.
- AAC-LC with the ``fast`` coder, 48 kb/s mono at 24 kHz (``AUDIO_SAMPLE_RATE``): ~1.4-1.8 % of
  a core per room with 2 s segments; at 48 kHz ~1.7-2.2 %, and ~3 % for 64 kb/s stereo with the
  default coder and decoder. Cost in quality: mono (the AudioBridge mix of voices loses nothing
  that matters), audio bandwidth up to ~11 kHz at 24 kHz (all of speech; music loses its top
  octave: set 48000 for a music room) and the fast coder's slightly coarser quantisation at
  the same bitrate (audible only on music). HLS with
  MPEG-TS needs AAC for hls.js (Opus in TS is not playable there); copying Opus into fMP4
  would cost ~0.3 % but needs MSE Opus support in every player.
- ``append_list`` + ``-start_number``: a restarted FFmpeg continues the playlist with higher
  numbers (after an ``EXT-X-DISCONTINUITY``) instead of starting over, so players never see
  the media sequence go backwards.
- ``omit_endlist``: FFmpeg would write ``#EXT-X-ENDLIST`` whenever it exits (also on a mixer
  restart); the mixer appends it itself when the room really ends.
- ``temp_file``: segments and playlists appear by rename, so nginx never serves half a file.
- ``-localaddr <MIXER_IP>``: the RTP and RTCP ports bind to the mixer's address only (without
  it FFmpeg's SDP demuxer binds them on every interface).

The process never runs through a shell; stdin is closed (``-nostdin``), stderr is read line by
line: "Opening '.../segment_N.ts.tmp' for writing" gives the segment being written, everything
is logged at debug and the last lines are kept for the log when FFmpeg exits.

Stopping: the mixer sends FFmpeg an RTCP BYE on the room's RTCP port, as an RTP sender does when
it leaves. The SDP demuxer ends its input at the BYE (it accepts it from any source: no
``filter_src``), so FFmpeg finishes as at the end of a file: it encodes what it has, writes the
last segment and the playlist and exits 0, in ~20 ms (FFmpeg 5.1 and 7.1, measured). Signals
and ``q`` on stdin do not do it: FFmpeg notices them only between input packets, so while the
input is silent (svc_janus removes the forwarder before the room stops, or no RTP ever came) it
sits in its input read until the demuxer's 10 s ``listen_timeout``; only a second signal
interrupts that read, and it also aborts the final writes (an empty playlist). SIGKILL stays as
the fallback at the stop deadline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import signal
import socket
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import ffmpeg

__all__ = [
    "PLAYLIST_NAME",
    "FfmpegProcess",
    "HlsParams",
    "build_argv",
    "keyinfo_text",
    "parse_segment_number",
    "process_cpu_seconds",
    "rtcp_address",
]

logger = logging.getLogger(__name__)

PLAYLIST_NAME = "stream.m3u8"
SEGMENT_PATTERN = "segment_%d.ts"
STDERR_TAIL_LINES = 20
BYE_RESEND_S = 0.2  # FfmpegProcess.stop: a BYE sent before FFmpeg bound its ports is lost
# RTCP BYE for two SSRCs: FFmpeg's RTP demuxer drops datagrams shorter than 12 bytes unread
_RTCP_BYE = struct.pack("!BBHII", 0x82, 203, 2, 0, 0)
_CLK_TCK = float(os.sysconf("SC_CLK_TCK"))
_OPENING = re.compile(r"Opening '(?:crypto:)?(?:.*/)?segment_(\d+)\.ts(?:\.tmp)?' for writing")


@attrs.frozen(kw_only=True)
class HlsParams:
    """Everything the command line depends on."""

    sdp_path: Path
    keyinfo_path: Path
    out_dir: Path
    start_number: int = 0
    hls_time_s: float = 2.0
    hls_list_size: int = 5
    audio_bitrate: str = "48k"
    audio_channels: int = 1
    audio_sample_rate: int = 24000
    ffmpeg_bin: str = "ffmpeg"
    bind_address: str = ""  # the local IPv4 address the RTP/RTCP ports bind to ("" = every one)


def build_argv(p: HlsParams) -> list[str]:
    """The FFmpeg argument list of one room (argv[0] is ``p.ffmpeg_bin``)."""
    input_options: dict[str, object] = {
        "protocol_whitelist": "file,udp,rtp",
        "analyzeduration": 0,
        "acodec": "libopus",
    }
    if p.bind_address:
        input_options["localaddr"] = p.bind_address
    source = ffmpeg.input(str(p.sdp_path), **input_options)
    out = ffmpeg.output(
        source.audio,
        str(p.out_dir / PLAYLIST_NAME),
        f="hls",
        acodec="aac",
        aac_coder="fast",
        ac=p.audio_channels,
        ar=p.audio_sample_rate,
        hls_time=f"{p.hls_time_s:g}",
        hls_list_size=p.hls_list_size,
        hls_flags="delete_segments+append_list+omit_endlist+temp_file",
        start_number=p.start_number,
        hls_key_info_file=str(p.keyinfo_path),
        hls_segment_filename=str(p.out_dir / SEGMENT_PATTERN),
        **{"b:a": p.audio_bitrate},
    ).global_args("-nostdin", "-nostats", "-hide_banner", "-loglevel", "info")
    argv: list[str] = ffmpeg.compile(out, cmd=p.ffmpeg_bin, overwrite_output=True)
    return argv


def keyinfo_text(key_uri: str, key_path: Path, iv: bytes) -> str:
    """FFmpeg's key info file: key URI (written into the playlist), key file, IV as hex."""
    if len(iv) != 16:
        raise ValueError("the IV must be 16 bytes")
    return f"{key_uri}\n{key_path}\n{iv.hex()}\n"


def parse_segment_number(line: str) -> int | None:
    """The number of the segment FFmpeg starts writing, if ``line`` says so."""
    m = _OPENING.search(line)
    return int(m.group(1)) if m else None


def rtcp_address(params: HlsParams, rtp_port: int) -> tuple[str, int]:
    """Where the FFmpeg of ``params`` receives RTCP for ``rtp_port``: its bind address (loopback
    when it binds every address), RTP port + 1. ``FfmpegProcess.stop`` sends the BYE there."""
    return params.bind_address or "127.0.0.1", rtp_port + 1


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / _CLK_TCK


class FfmpegProcess:
    """One FFmpeg run: start, follow stderr, wait, stop (RTCP BYE, SIGKILL after a timeout)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        on_segment: Callable[[int], None] | None = None,
        rtcp: tuple[str, int] | None = None,
    ) -> None:
        """``rtcp`` (:func:`rtcp_address`) is where ``stop`` sends the BYE; without it ``stop``
        falls back to SIGTERM."""
        self.argv = list(argv)
        self.name = name
        self._on_segment = on_segment
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.started_at = 0.0
        self.last_segment: int | None = None
        self._rtcp = rtcp

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    async def start(self) -> int:
        """Spawn FFmpeg; returns its pid. Raises OSError if the binary cannot run."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            # its own process group: a signal meant for svc_mixer's group (supervisord's stop)
            # must not kill FFmpeg behind the mixer's back; the mixer stops it itself
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        self._reader = asyncio.create_task(self._read_stderr(), name=f"ffmpeg-stderr-{self.name}")
        return self._proc.pid

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        stream = self._proc.stderr
        while True:
            raw = await stream.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            self.tail.append(line)
            logger.debug("ffmpeg %s: %s", self.name, line)
            number = parse_segment_number(line)
            if number is not None:
                self.last_segment = number
                if self._on_segment is not None:
                    self._on_segment(number)

    async def wait(self) -> int:
        """Wait for the exit (and for stderr to be read to its end); returns the exit code."""
        assert self._proc is not None
        code = await self._proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        return code

    async def stop(self, timeout_s: float) -> int | None:
        """End the input (RTCP BYE; SIGTERM without an RTCP address), SIGKILL after ``timeout_s``;
        returns the exit code (None if never started)."""
        if self._proc is None:
            return None
        if self._proc.returncode is None and self._rtcp is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._proc.returncode is None and (left := deadline - loop.time()) > 0:
            if self._rtcp is not None:
                self._send_bye(self._rtcp)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(BYE_RESEND_S, left)):
                    await self._proc.wait()
        if self._proc.returncode is None:
            logger.warning("ffmpeg %s still running %.1f s after the stop: SIGKILL", self.name, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            # the pipe closes with the process; a grandchild holding it must not hang us
            try:
                async with asyncio.timeout(1.0):
                    await self._reader
            except TimeoutError:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
        return self._proc.returncode

    def _send_bye(self, address: tuple[str, int]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(_RTCP_BYE, address)
            except OSError as exc:  # the SIGKILL at the deadline still ends FFmpeg
                logger.warning("ffmpeg %s: RTCP BYE to %s:%d failed: %s", self.name, *address, exc)
