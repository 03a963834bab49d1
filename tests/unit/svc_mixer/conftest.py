"""A Mixer on a fake clock (``setup``), for the watchdog and health rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from svc_mixer.service import Mixer, MixerSettings
from tests.unit.svc_mixer.fakes import HLS_TIME_S, FakeClock, MixerSetup


@pytest.fixture
def setup(tmp_path: Path) -> MixerSetup:
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
        hls_time_s=HLS_TIME_S,
    )
    mixer = Mixer(settings, on_exit=lambda room, delay: restarts.append((room, delay)), clock=clock)
    return mixer, clock, restarts
