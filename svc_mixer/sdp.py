"""The SDP file FFmpeg reads to receive a room's forwarded mix (Opus RTP from Janus).

The payload type, clock rate and channel count are those the Janus forwarder sends
(``common.media``); a mismatch makes FFmpeg drop every packet. ``c=`` names the address the
mixer is reached at; FFmpeg binds the RTP/RTCP ports to it through its ``-localaddr`` input
option (svc_mixer.ffmpeg), since the SDP demuxer would otherwise bind every interface.
"""

from __future__ import annotations

import ipaddress

from common.media import OPUS_CHANNELS, OPUS_CLOCK_RATE, OPUS_PAYLOAD_TYPE

__all__ = ["render_sdp"]


def render_sdp(
    room_id: str, port: int, host: str = "127.0.0.1", payload_type: int = OPUS_PAYLOAD_TYPE
) -> str:
    """SDP of one room: Opus/48000/2 on ``port`` (RTCP on ``port + 1``)."""
    try:
        address = str(ipaddress.IPv4Address(host))
    except ValueError:
        # a host name: FFmpeg needs an address in c=, and any local one will do
        address = "0.0.0.0"
    lines = [
        "v=0",
        f"o=- 0 0 IN IP4 {address}",
        f"s=audio-rtc room {room_id}",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {payload_type}",
        f"a=rtpmap:{payload_type} opus/{OPUS_CLOCK_RATE}/{OPUS_CHANNELS}",
    ]
    return "\n".join(lines) + "\n"
