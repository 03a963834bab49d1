"""The HLS output dir of a room: where numbering continues, how a playlist is ended.

Files: ``<HLS_DIR>/<roomId>/stream.m3u8`` and ``segment_<N>.ts``. All helpers are small
synchronous file operations on one directory (a playlist is a few hundred bytes).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

__all__ = [
    "ENDLIST",
    "end_playlist",
    "has_endlist",
    "last_segment_number",
    "remove_dir",
    "seconds_since_change",
]

ENDLIST = "#EXT-X-ENDLIST"
_SEGMENT_FILE = re.compile(r"segment_(\d+)\.ts")


def _read(playlist: Path) -> str:
    try:
        return playlist.read_text()
    except OSError:
        return ""


def has_endlist(playlist: Path) -> bool:
    return ENDLIST in _read(playlist)


def last_segment_number(out_dir: Path) -> int | None:
    """The highest segment number in the playlist or on disk (None: nothing written yet)."""
    numbers: list[int] = []
    if out_dir.exists():
        for path in out_dir.iterdir():
            m = _SEGMENT_FILE.fullmatch(path.name.removesuffix(".tmp"))
            if m:
                numbers.append(int(m.group(1)))
    playlist = _read(out_dir / "stream.m3u8")
    numbers.extend(int(n) for n in _SEGMENT_FILE.findall(playlist))
    return max(numbers) if numbers else None


def end_playlist(playlist: Path) -> bool:
    """Append ``#EXT-X-ENDLIST`` unless the playlist has it or does not exist; True if written."""
    text = _read(playlist)
    if not text or ENDLIST in text:
        return False
    tmp = playlist.with_name(playlist.name + ".end")
    tmp.write_text(text.rstrip("\n") + "\n" + ENDLIST + "\n")
    os.replace(tmp, playlist)  # players never read a half-written playlist
    return True


def seconds_since_change(out_dir: Path) -> float | None:
    """Age of the newest file in the dir (None if the dir does not exist)."""
    try:
        mtimes = [out_dir.stat().st_mtime, *(p.stat().st_mtime for p in out_dir.iterdir())]
    except OSError:
        return None
    return max(0.0, time.time() - max(mtimes))


def remove_dir(out_dir: Path) -> None:
    shutil.rmtree(out_dir, ignore_errors=True)
