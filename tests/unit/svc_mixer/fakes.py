"""Fakes of the mixer's unit tests: a clock and an FFmpeg process (the fixture is in conftest.py)."""

from __future__ import annotations

import time

from svc_mixer.service import Mixer

HLS_TIME_S = 2.0

# (the mixer, its clock, the (room, delay) restarts it handed to the scheduler)
MixerSetup = tuple[Mixer, "FakeClock", list[tuple[str, float]]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeProc:
    """What the watchdog, the health check and the exit watcher read of an FfmpegProcess."""

    def __init__(self) -> None:
        self.is_running = True
        self.pid = 4242
        self.last_segment: int | None = 7
        self.started_at = time.monotonic()  # a young process: its exit counts as a crash
        self.tail: list[str] = ["killed"]

    async def wait(self) -> int:
        self.is_running = False
        return -9
