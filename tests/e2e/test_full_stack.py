"""The whole backend as `just up` runs it: every service under supervisord, real everything.

A room is created through the REST API; svc_rooms assigns it to the stack's Janus and mixer;
svc_janus makes the AudioBridge room and forwards its mix to svc_mixer's FFmpeg. A plain-RTP
speaker joins the room with its pin and plays 440 Hz; a listener fetches the playlist, a viewer
token and the AES key through nginx, decrypts a segment written after the speaker started and
hears the tone. Then the room is deleted and the stack stopped, with no process left.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from common import records
from common.etcd import EtcdStore
from common.keys import Keyspace
from svc_janus.janus_ws import JanusClient
from tests.integration.eventcore import eventually
from tests.integration.svc_janus.janus_helpers import RtpSpeaker
from tests.servers_nginx import decode_pcm, tone_stats
from tests.stackutil import Stack, shutdown_problems, stack

pytestmark = [pytest.mark.slow, pytest.mark.janus, pytest.mark.ffmpeg]

FREQUENCY = 440
SEGMENT = re.compile(r"^(segment_(\d+)\.ts)$", re.MULTILINE)
KEY_LINE = re.compile(r'#EXT-X-KEY:METHOD=AES-128,URI="([^"]+)",IV=0x([0-9a-f]{32})')


async def _room_on_air(http: httpx.AsyncClient, rooms: str, room: str) -> dict[str, Any] | None:
    r = await http.get(f"{rooms}/api/rooms/{room}")
    body = r.json().get("room", {}) if r.status_code == 200 else {}
    janus, mixer = body.get("janus", {}), body.get("mixer", {})
    ready = janus.get("state") == "forwarding" and mixer.get("state") == "ready"
    return body if ready else None


def _udp_bound_addresses(port: int) -> set[str]:
    """The local IPv4 addresses UDP sockets on ``port`` are bound to (from /proc/net/udp)."""
    found = set()
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        local = line.split()[1]
        addr_hex, port_hex = local.split(":")
        if int(port_hex, 16) == port:
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(addr_hex))))
    return found


def test_room_from_rest_api_to_decrypted_hls(new_stack: Any, tmp_path: Path) -> None:
    s: Stack = new_stack()
    out = s.up().stdout
    assert all(f"{name} " in out for name in ("svc_rooms", "svc_janus", "svc_mixer", "svc_users", "nginx"))
    asyncio.run(_flow(s, tmp_path))
    pids = s.pids()
    s.down()
    assert all(not stack.pid_alive(p) for p in pids.values()), "a process outlived `down`"
    # services stopped before the servers they use: no revoke failures, cut drains or resets
    assert shutdown_problems(s.run_dir) == {}


async def _flow(s: Stack, tmp_path: Path) -> None:
    rooms = f"http://127.0.0.1:{s.port('SVC_ROOMS_PORT')}"
    origin = f"http://127.0.0.1:{s.port('NGINX_PORT')}"
    room, pin = "e2e-tone-room", "tone42"
    # `up` generated the API token into the run dir, where scripts read it
    api_auth = {"Authorization": f"Bearer {(s.run_dir / 'api-token').read_text().strip()}"}
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await http.post(f"{rooms}/api/rooms", json={"roomId": room, "pin": pin})
        assert refused.status_code == 401, refused.text
        created = await http.post(f"{rooms}/api/rooms", json={"roomId": room, "pin": pin}, headers=api_auth)
        assert created.status_code == 201, created.text
        assert created.json()["room"]["hlsUrl"] == f"{origin}/hls/{room}/stream.m3u8"
        await eventually(lambda: _room_on_air(http, rooms, room), 15, "room forwarding to a ready mixer")
        on_air = await _room_on_air(http, rooms, room)
        assert on_air is not None
        # every listening socket of the stack is on loopback, the mixer's RTP port included
        # (FFmpeg opens it a moment after the mixer record is written)
        rtp_port = on_air["mixer"]["rtpPort"]
        await eventually(lambda: _udp_bound_addresses(rtp_port), 10, "FFmpeg listening")
        assert _udp_bound_addresses(rtp_port) == {"127.0.0.1"}

        async with EtcdStore.open([f"127.0.0.1:{s.port('ETCD_PORT')}"]) as etcd:
            kv = await etcd.get(Keyspace().room_key(room, "janus"))
        assert kv is not None
        janus_room_id = records.decode_record("janus", kv.value).janus_room_id

        async with JanusClient(f"ws://127.0.0.1:{s.port('JANUS_WS_PORT')}", request_timeout_s=5) as janus:
            await janus.wait_connected(10)
            async with RtpSpeaker(janus, janus_room_id, pin=pin, frequency_hz=FREQUENCY):
                speaking_since = time.time()
                playlist = f"{origin}/hls/{room}/stream.m3u8"
                text = ""

                async def fresh_segment() -> str | None:
                    # a whole segment written after the speaker started (and after the jitter buffer)
                    nonlocal text
                    r = await http.get(playlist)
                    text = r.text if r.status_code == 200 else ""
                    names = [m.group(1) for m in SEGMENT.finditer(text)]
                    for name in reversed(names[:-1] if len(names) > 1 else []):
                        path = s.run_dir / "hls" / room / name
                        if path.exists() and path.stat().st_mtime > speaking_since + 2.5:
                            return name
                    return None

                await eventually(fresh_segment, 20, "a segment recorded while the speaker talks")
                segment = await fresh_segment()
                assert segment is not None
                key_line = KEY_LINE.search(text)
                assert key_line is not None, text
                assert key_line.group(1) == f"{origin}/hls/rooms/{room}/enc.key"
                token = (await http.post(f"{origin}/api/token", json={"roomId": room})).json()["token"]
                auth = {"Authorization": f"Bearer {token}"}
                key = (await http.get(key_line.group(1), headers=auth)).content
                assert len(key) == 16
                seg_path = tmp_path / "segment.ts"
                seg_path.write_bytes((await http.get(f"{origin}/hls/{room}/{segment}")).content)

        pcm = await asyncio.to_thread(
            decode_pcm,
            ["-decryption_key", key.hex(), "-decryption_iv", key_line.group(2), "-i", f"crypto:{seg_path}"],
        )
        frequency, level_dbfs = tone_stats(pcm)
        assert abs(frequency - FREQUENCY) / FREQUENCY < 0.02, frequency
        assert level_dbfs > -40, level_dbfs

        deleted = await http.delete(f"{rooms}/api/rooms/{room}", headers=api_auth)
        assert deleted.status_code == 200, deleted.text

        async def ended() -> bool:
            r = await http.get(f"{origin}/hls/{room}/stream.m3u8")
            return r.status_code == 200 and "#EXT-X-ENDLIST" in r.text

        await eventually(ended, 15, "the playlist ends after the room is deleted")
        assert (await http.post(f"{origin}/api/token", json={"roomId": room})).status_code == 404
