"""The per-room SDP: exactly what the Janus forwarder sends (Opus/48000/2, payload type 111)."""

from __future__ import annotations

from common.media import OPUS_PAYLOAD_TYPE
from svc_mixer.sdp import render_sdp


def test_sdp_lines() -> None:
    assert render_sdp("room-1", 10002, "127.0.0.1").splitlines() == [
        "v=0",
        "o=- 0 0 IN IP4 127.0.0.1",
        "s=audio-rtc room room-1",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=audio 10002 RTP/AVP 111",
        "a=rtpmap:111 opus/48000/2",
    ]


def test_payload_type_is_the_forwarders() -> None:
    assert OPUS_PAYLOAD_TYPE == 111
    assert f"m=audio 5000 RTP/AVP {OPUS_PAYLOAD_TYPE}\n" in render_sdp("abc", 5000)


def test_host_name_listens_on_any_address() -> None:
    text = render_sdp("abc", 5000, "mixer.example")
    assert "c=IN IP4 0.0.0.0\n" in text
    assert text.endswith("\n")
