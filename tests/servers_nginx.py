"""nginx for tests, configured from the stack's own template (infra/nginx.conf), and FFmpeg helpers.

``NginxServer(run_dir, svc_users_port=...)`` renders the template like the stack does (the HLS
files are served from ``run_dir/hls``), starts ``nginx`` in the foreground on a free loopback
port and stops it by pid. The FFmpeg helpers send an Opus RTP test tone (what a Janus forwarder
would send) and measure the frequency and level of decoded audio.
"""

from __future__ import annotations

import array
import math
import os
import pwd
import string
import subprocess
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from common.media import OPUS_PAYLOAD_TYPE
from tests.servers import LOOPBACK, ServerProcess, find_binary, free_port

__all__ = ["NginxServer", "decode_pcm", "send_tone", "tone_stats"]

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "nginx.conf"
PCM_RATE = 48_000


class NginxServer(ServerProcess):
    name = "nginx"

    def __init__(
        self,
        run_dir: Path,
        *,
        svc_users_port: int,
        svc_gateway_port: int | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(run_dir)
        self.port = port or free_port()
        self.svc_users_port = svc_users_port
        self.hls_dir = self.run_dir / "hls"
        self.hls_dir.mkdir(exist_ok=True)
        (self.run_dir / "nginx").mkdir(exist_ok=True)
        self.conf = self.run_dir / "nginx.conf"
        self.conf.write_text(
            string.Template(TEMPLATE.read_text()).substitute(
                run_dir=str(self.run_dir),
                nginx_port=self.port,
                svc_users_port=svc_users_port,
                # tests without a gateway: /ws then answers 502, nothing else changes
                svc_gateway_port=svc_gateway_port or free_port(),
                stack_user=pwd.getpwuid(os.getuid()).pw_name,
            )
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def argv(self) -> list[str]:
        return [
            find_binary("nginx"),
            "-c",
            str(self.conf),
            "-p",
            f"{self.run_dir / 'nginx'}/",
            "-e",
            "stderr",
        ]

    def is_ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/health", timeout=0.5) as r:
            return bool(r.status == 200)


def tone_argv(
    port: int, *, frequency: int = 440, seconds: float | None = None, host: str = LOOPBACK
) -> list[str]:
    """FFmpeg sending a 48 kHz sine as Opus RTP (payload type 111) in real time to host:port."""
    duration = f":duration={seconds}" if seconds is not None else ""
    return [
        find_binary("ffmpeg"),
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={frequency}:sample_rate=48000{duration}",
        "-c:a",
        "libopus",
        "-b:a",
        "64k",
        "-payload_type",
        str(OPUS_PAYLOAD_TYPE),
        "-f",
        "rtp",
        f"rtp://{host}:{port}",
    ]


def send_tone(
    port: int, *, frequency: int = 440, seconds: float = 30.0, host: str = LOOPBACK
) -> subprocess.Popen[bytes]:
    """Start FFmpeg sending a sine as Opus RTP (payload type 111) in real time; caller stops it."""
    return subprocess.Popen(
        tone_argv(port, frequency=frequency, seconds=seconds, host=host),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def decode_pcm(input_args: Sequence[str], *, timeout_s: float = 30.0) -> array.array[int]:
    """Run ``ffmpeg <input_args>`` and return its audio as mono signed 16-bit samples at 48 kHz."""
    argv = [
        find_binary("ffmpeg"),
        "-nostdin",
        "-loglevel",
        "error",
        *input_args,
        "-ac",
        "1",
        "-ar",
        str(PCM_RATE),
        "-f",
        "s16le",
        "-",
    ]
    out = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"ffmpeg decode failed ({out.returncode}): {out.stderr.decode()[-800:]}")
    samples = array.array("h")
    samples.frombytes(out.stdout[: len(out.stdout) // 2 * 2])
    return samples


def tone_stats(samples: Sequence[int], rate: int = PCM_RATE) -> tuple[float, float]:
    """(frequency in Hz from rising zero crossings, RMS level in dBFS) of a mono 16-bit signal.

    The first and last 10 % are skipped (encoder priming, the cut at the segment end); the
    frequency is crossings / time between the first and the last crossing, which is exact to
    well under 1 % for a clean sine over a second or more.
    """
    n = len(samples)
    body = samples[n // 10 : n - n // 10]
    if len(body) < rate // 4:
        raise ValueError(f"too little audio to measure: {len(body)} samples")
    rising = [i for i in range(1, len(body)) if body[i - 1] < 0 <= body[i]]
    if len(rising) < 2:
        return 0.0, -math.inf
    frequency = (len(rising) - 1) * rate / (rising[-1] - rising[0])
    rms = math.sqrt(sum(s * s for s in body) / len(body)) / 32768.0
    return frequency, (20 * math.log10(rms) if rms > 0 else -math.inf)
