"""A listener's view of a room's HLS for the end-to-end tests: the newest whole segment
written after a moment, fetched, decrypted with a viewer token's key and decoded to PCM."""

from __future__ import annotations

import array
import asyncio
import re
from pathlib import Path

import httpx

from tests.servers_nginx import decode_pcm

__all__ = ["KEY_LINE", "SEGMENT", "fresh_segment_pcm"]

SEGMENT = re.compile(r"^(segment_(\d+)\.ts)$", re.MULTILINE)
KEY_LINE = re.compile(r'#EXT-X-KEY:METHOD=AES-128,URI="([^"]+)",IV=0x([0-9a-f]{32})')
# FFmpeg finishes a segment (its mtime) about this long after the audio at its end entered Janus
PIPELINE_S = 1.0
SEGMENT_S = 2.0  # svc_mixer's HLS_TIME


async def fresh_segment_pcm(
    http: httpx.AsyncClient,
    *,
    origin: str,
    room: str,
    hls_dir: Path,
    since: float,
    work_dir: Path,
    timeout_s: float = 25,
) -> array.array[int]:
    """Mono 48 kHz samples of a whole segment recorded after ``since`` (epoch s), read through
    nginx like a listener: playlist, viewer token, AES key, segment."""
    playlist = f"{origin}/hls/{room}/stream.m3u8"
    async with asyncio.timeout(timeout_s):
        while True:
            r = await http.get(playlist)
            text = r.text if r.status_code == 200 else ""
            names = [m.group(1) for m in SEGMENT.finditer(text)]
            fresh = [
                n
                for n in names[:-1]  # the last one may still be written
                if (hls_dir / n).exists() and (hls_dir / n).stat().st_mtime > since + PIPELINE_S + SEGMENT_S
            ]
            if fresh:
                break
            await asyncio.sleep(0.5)
    name = fresh[0]
    key_line = KEY_LINE.search(text)
    assert key_line is not None, text
    token = (await http.post(f"{origin}/api/token", json={"roomId": room})).json()["token"]
    key = (await http.get(key_line.group(1), headers={"Authorization": f"Bearer {token}"})).content
    assert len(key) == 16, key
    seg_path = work_dir / f"{room}-{name}"
    seg_path.write_bytes((await http.get(f"{origin}/hls/{room}/{name}")).content)
    return await asyncio.to_thread(
        decode_pcm,
        ["-decryption_key", key.hex(), "-decryption_iv", key_line.group(2), "-i", f"crypto:{seg_path}"],
    )
