"""Helpers for the svc_janus integration tests, contract tests and benchmarks (plain functions).

- ``manager_env``: the environment of a svc_janus pointed at test servers;
- ``live_room``: write meta + onair livemeta (what svc_rooms does) and ``mixer_record`` (what
  svc_mixer does) with the state store;
- ``RtpSpeaker``: a plain-RTP participant (audio without a browser): joins the
  AudioBridge room over its own Janus handle and plays a tone with ffmpeg;
- ``OpusReceiver``: the UDP socket at the "mixer" address; ``decode_frequency`` decodes what
  it got with ffmpeg and measures the tone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from common import records
from common.keys import Keyspace, StateKey
from common.media import OPUS_PAYLOAD_TYPE
from common.state import StateStore
from svc_janus.audiobridge import AudioBridge
from svc_janus.janus_ws import JanusClient
from svc_janus.service import random_room_number
from tests.servers import LOOPBACK, free_port
from tests.servers_janus import JanusServer
from tests.servers_nginx import tone_argv

__all__ = [
    "OpusReceiver",
    "RtpSpeaker",
    "bridge_for",
    "decode_frequency",
    "decode_opus_rtp",
    "live_room",
    "manager_env",
    "mixer_record",
    "random_free_room",
    "rooms_by_description",
    "rtp_payload_type",
    "stop_room",
    "unique_id",
]


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def manager_env(
    janus: JanusServer,
    *,
    nats_url: str,
    etcd_endpoint: str,
    keyspace: Keyspace,
    janus_id: str,
    http_port: int | None = None,
    monitor_interval: str = "1s",
) -> dict[str, str]:
    return {
        "NATS_SERVERS": nats_url,
        "ETCD_ENDPOINTS": etcd_endpoint,
        "ETCD_PREFIX_ROOMS": keyspace.rooms,
        "ETCD_PREFIX_JANUSES": keyspace.januses,
        "ETCD_PREFIX_MIXERS": keyspace.mixers,
        "JANUS_ID": janus_id,
        "JANUS_WS_URL": janus.ws_url,
        "ADMIN_SECRET": janus.admin_key,
        "JANUS_REQUEST_TIMEOUT": "5s",
        "HTTP_ADDR": f"{LOOPBACK}:{http_port or free_port()}",
        "MONITOR_INTERVAL": monitor_interval,
        "LEASE_TTL": "3s",
        "APP_SHUTDOWN_TIMEOUT": "5s",
    }


async def live_room(
    store: StateStore, room_id: str, *, janus_id: str, mixer_id: str = "mixer-t1", pin: str = "pin123"
) -> None:
    now = datetime.now(UTC)
    await store.put(
        StateKey("rooms", room_id, "meta"),
        records.RoomMeta(pin=pin, max_anchors=3, hls_path=f"{room_id}/stream.m3u8", created_at=now),
    )
    await store.put(
        StateKey("rooms", room_id, "livemeta"),
        records.LiveMeta(
            status=records.LiveStatus.ONAIR,
            janus_id=janus_id,
            mixer_id=mixer_id,
            nonce="00" * 10,
            generation=1,
            created_at=now,
        ),
    )


async def stop_room(store: StateStore, room_id: str) -> None:
    """What svc_rooms does on DELETE: livemeta becomes ``removing``."""
    now = datetime.now(UTC)
    await store.put(
        StateKey("rooms", room_id, "livemeta"),
        records.LiveMeta(
            status=records.LiveStatus.REMOVING,
            janus_id="",
            mixer_id="",
            nonce="",
            generation=1,
            created_at=now,
            discard_at=now,
        ),
    )


async def mixer_record(
    store: StateStore, room_id: str, port: int, *, mixer_id: str = "mixer-t1", host: str = LOOPBACK
) -> None:
    await store.put(
        StateKey("rooms", room_id, "mixer"),
        records.MixerRecord(
            id=mixer_id,
            host=host,
            port=port,
            status=records.MixerStatus.READY,
            generation=1,
            updated_at=datetime.now(UTC),
        ),
    )


def bridge_for(client: JanusClient, janus: JanusServer) -> AudioBridge:
    return AudioBridge(client, admin_key=janus.admin_key)


async def rooms_by_description(bridge: AudioBridge, room_id: str) -> list[int]:
    return sorted(r.room for r in await bridge.list_audiobridge_rooms() if r.description == room_id)


class RtpSpeaker:
    """A plain-RTP participant playing a sine tone into an AudioBridge room."""

    def __init__(self, client: JanusClient, janus_room_id: int, *, pin: str, frequency_hz: int = 440) -> None:
        self._client = client
        self.janus_room_id = janus_room_id
        self.pin = pin
        self.frequency_hz = frequency_hz
        self.proc: asyncio.subprocess.Process | None = None
        self.handle_id = 0
        self.rtp_port = 0

    async def start(self) -> None:
        self.handle_id = await self._client.attach()
        joined = await self._client.message_async(
            {
                "request": "join",
                "room": self.janus_room_id,
                "pin": self.pin,
                "display": "tone",
                "rtp": {"payload_type": OPUS_PAYLOAD_TYPE},
            },
            handle_id=self.handle_id,
        )
        self.rtp_port = int(joined["rtp"]["port"])
        self.proc = await asyncio.create_subprocess_exec(
            *tone_argv(self.rtp_port, frequency=self.frequency_hz),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self.handle_id and self._client.is_connected:
            with contextlib.suppress(Exception):
                await self._client.detach(self.handle_id)
        self.handle_id = 0

    async def __aenter__(self) -> RtpSpeaker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class OpusReceiver:
    """A UDP socket on loopback (the "mixer"): collects the RTP packets sent to it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.packets: list[bytes] = []

    async def collect(self, seconds: float) -> list[bytes]:
        """Packets received during the next ``seconds``."""
        loop = asyncio.get_running_loop()
        got: list[bytes] = []
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                got.append(await asyncio.wait_for(loop.sock_recv(self.sock, 2048), left))
            except TimeoutError:
                break
        self.packets.extend(got)
        return got

    def close(self) -> None:
        self.sock.close()


def rtp_payload_type(packet: bytes) -> int:
    return packet[1] & 0x7F


def decode_opus_rtp(packets: list[bytes]) -> bytes:
    """Replay ``packets`` to an ffmpeg reading RTP through an SDP: mono s16le PCM at 48 kHz.

    Blocking (runs ffmpeg): call it with ``asyncio.to_thread``.
    """
    with tempfile.TemporaryDirectory(prefix="janus-rx-") as tmp:
        port = free_port() & ~1
        sdp = Path(tmp) / "in.sdp"
        sdp.write_text(
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=test\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP {OPUS_PAYLOAD_TYPE}\r\n"
            f"a=rtpmap:{OPUS_PAYLOAD_TYPE} opus/48000/2\r\n"
        )
        out = Path(tmp) / "out.pcm"
        argv = ["ffmpeg", "-nostdin", "-loglevel", "error", "-protocol_whitelist", "file,udp,rtp"]
        argv += ["-i", str(sdp), "-ac", "1", "-ar", "48000", "-flush_packets", "1", "-f", "s16le", str(out)]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.7)  # ffmpeg opens its RTP port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                for packet in packets:
                    tx.sendto(packet, (LOOPBACK, port))
                    time.sleep(0.0005)  # a burst would overflow the receive buffer
            time.sleep(0.5)
        finally:
            # ffmpeg ignores SIGTERM while its UDP input waits; every packet is on disk already
            # (flush_packets), so nothing is lost by a kill.
            proc.kill()
            proc.wait(10)
        return out.read_bytes() if out.exists() else b""


def decode_frequency(packets: list[bytes]) -> tuple[float, float]:
    """(frequency in Hz, RMS level 0..1) of the tone in Opus RTP ``packets`` (blocking: ffmpeg)."""
    pcm = decode_opus_rtp(packets)
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm[: len(pcm) // 2 * 2])
    if len(samples) < 4800:
        return 0.0, 0.0
    # Skip the first 0.1 s (decoder start), count rising zero crossings of the rest.
    body = samples[4800:]
    rms = math.sqrt(sum(s * s for s in body) / len(body)) / 32768
    crossings = sum(1 for a, b in itertools.pairwise(body) if a < 0 <= b)
    return crossings / (len(body) / 48000), rms


async def random_free_room(bridge: AudioBridge) -> int:
    """A six-digit room id not in use on this Janus now."""
    used = {r.room for r in await bridge.list_audiobridge_rooms()}
    while (number := random_room_number()) in used:
        pass
    return number
