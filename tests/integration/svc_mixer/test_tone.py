"""The whole HLS path: onair room -> mixer record -> Opus RTP tone -> AES-128 HLS through nginx,
key from svc_users with a viewer token, decrypted segment carries the tone."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from common.keys import StateKey
from common.state import StateStore
from tests.integration.eventcore import eventually
from tests.integration.svc_mixer.mixer_helpers import MixerProcess, onair, put_livemeta, unique_id
from tests.servers_nginx import NginxServer, decode_pcm, send_tone, tone_stats

pytestmark = [pytest.mark.ffmpeg, pytest.mark.slow]

FREQUENCY = 440


async def test_tone_reaches_listeners_encrypted(
    store: StateStore, nginx: NginxServer, make_mixer: Callable[..., MixerProcess], tmp_path: Path
) -> None:
    mixer = make_mixer(key_base_url=f"{nginx.url}/hls/rooms/", hls_dir=nginx.hls_dir)
    await asyncio.to_thread(mixer.start)
    room = unique_id("tone")
    await put_livemeta(store, room, onair(mixer.mixer_id))

    async def record() -> object:
        found = await store.get(StateKey("rooms", room, "mixer"))
        return found.record if found else None

    await eventually(record, 10, "mixer record written")
    rec = await record()
    assert rec.id == mixer.mixer_id and rec.host == "127.0.0.1"  # type: ignore[attr-defined]
    assert mixer.port_start <= rec.port < mixer.port_end and rec.port % 2 == 0  # type: ignore[attr-defined]

    sender = send_tone(rec.port, frequency=FREQUENCY, seconds=30)  # type: ignore[attr-defined]
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(base_url=nginx.url, timeout=5) as http:
            playlist_url = f"/hls/{room}/stream.m3u8"
            text = ""

            async def two_segments() -> bool:
                nonlocal text
                r = await http.get(playlist_url)
                text = r.text if r.status_code == 200 else ""
                return len(re.findall(r"^segment_\d+\.ts$", text, re.MULTILINE)) >= 2

            await eventually(two_segments, 6, "playlist with segments within 6 s of RTP")
            assert time.monotonic() - started < 6.5
            r = await http.get(playlist_url)
            assert r.headers["content-type"] == "application/vnd.apple.mpegurl"
            assert "no-cache" in r.headers["cache-control"]
            key_line = re.search(r'#EXT-X-KEY:METHOD=AES-128,URI="([^"]+)",IV=0x([0-9a-f]{32})', text)
            assert key_line, text
            assert key_line.group(1) == f"{nginx.url}/hls/rooms/{room}/enc.key"
            iv = key_line.group(2)
            segment = re.findall(r"^(segment_\d+\.ts)$", text, re.MULTILINE)[-1]

            token_reply = await http.post("/api/token", json={"roomId": room})
            assert token_reply.status_code == 200, token_reply.text
            token = token_reply.json()["token"]
            assert (await http.get(key_line.group(1))).status_code == 401
            key_reply = await http.get(key_line.group(1), headers={"Authorization": f"Bearer {token}"})
            assert key_reply.status_code == 200
            assert "no-store" in key_reply.headers["cache-control"]
            key = key_reply.content
            assert len(key) == 16

            seg_reply = await http.get(f"/hls/{room}/{segment}")
            assert seg_reply.status_code == 200
            assert seg_reply.headers["content-type"] == "video/mp2t"
        seg_path = tmp_path / "segment.ts"
        seg_path.write_bytes(seg_reply.content)

        # without the key the segment is noise to a decoder
        with pytest.raises(RuntimeError):
            await asyncio.to_thread(decode_pcm, ["-f", "mpegts", "-i", str(seg_path)])
        pcm = await asyncio.to_thread(
            decode_pcm, ["-decryption_key", key.hex(), "-decryption_iv", iv, "-i", f"crypto:{seg_path}"]
        )
        frequency, level_dbfs = tone_stats(pcm)
        assert abs(frequency - FREQUENCY) / FREQUENCY < 0.02, frequency
        assert level_dbfs > -40, level_dbfs
    finally:
        sender.kill()
        sender.wait()
