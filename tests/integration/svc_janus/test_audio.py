"""Audio through the real chain: a plain-RTP participant plays 440 Hz into the room svc_janus
made; the forwarder delivers Opus RTP to the "mixer" socket; ffmpeg decodes it to the tone."""

from __future__ import annotations

import asyncio

import pytest

from common import records
from common.keys import StateKey
from common.state import StateStore
from svc_janus.app import running
from svc_janus.config import Config
from svc_janus.janus_ws import JanusClient
from tests.integration.eventcore import eventually
from tests.integration.svc_janus.janus_helpers import (
    OpusReceiver,
    RtpSpeaker,
    decode_frequency,
    live_room,
    mixer_record,
    rtp_payload_type,
    unique_id,
)

pytestmark = [pytest.mark.janus, pytest.mark.ffmpeg, pytest.mark.slow]


async def test_tone_reaches_the_mixer_address(
    manager_config: Config, store: StateStore, janus_client: JanusClient
) -> None:
    room_id = unique_id("audio")
    rx = OpusReceiver()
    try:
        async with running(manager_config):
            await live_room(store, room_id, janus_id=manager_config.janus_id, pin="pin777")
            await mixer_record(store, room_id, rx.port)

            async def forwarding() -> records.JanusRecord | None:
                got = await store.get(StateKey("rooms", room_id, "janus"))
                ok = got is not None and got.record.status is records.JanusStatus.FORWARDING
                return got.record if ok and got is not None else None

            await eventually(forwarding, 10, "forwarding")
            rec = await forwarding()
            assert rec is not None and rec.janus_room_id is not None
            # The control: an empty room forwards silence (always_on), and silence decodes quiet.
            silence = await rx.collect(2.0)
            assert len(silence) > 50 and {rtp_payload_type(p) for p in silence} == {111}
            _, quiet_rms = await asyncio.to_thread(decode_frequency, silence)
            assert quiet_rms < 0.005
            async with RtpSpeaker(janus_client, rec.janus_room_id, pin="pin777", frequency_hz=440):
                await rx.collect(1.0)  # Janus's jitter buffer fills, the mix starts
                tone = await rx.collect(3.0)
            assert {rtp_payload_type(p) for p in tone} == {111}
            frequency, rms = await asyncio.to_thread(decode_frequency, tone)
            assert rms > 0.02, f"the mix is silent (rms {rms:.4f})"
            assert frequency == pytest.approx(440, rel=0.03)
    finally:
        rx.close()
