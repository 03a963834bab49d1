"""Media facts the Janus manager and the mixer must agree on (the forwarder feeds the mixer)."""

from __future__ import annotations

__all__ = ["OPUS_CHANNELS", "OPUS_CLOCK_RATE", "OPUS_PAYLOAD_TYPE"]

# The RTP payload type of the room mix: Janus's rtp_forward `ptype` and the mixer's SDP `a=rtpmap`.
OPUS_PAYLOAD_TYPE = 111
OPUS_CLOCK_RATE = 48_000
OPUS_CHANNELS = 2
