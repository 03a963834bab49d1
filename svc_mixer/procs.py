"""Pid files of the FFmpeg processes this mixer started, so a restart can kill what a crash left.

One JSON file per room in ``<state dir>/procs/``: ``{"pid", "argv"}``, written right after the
spawn and removed after the process is reaped. A mixer killed with SIGKILL leaves its FFmpegs
running (they hold the RTP ports and keep writing the playlists); the next start reads the
files and kills each pid whose ``/proc/<pid>/cmdline`` is still exactly the recorded command,
so a pid the kernel has since given to another program is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ProcessRegistry", "cmdline_of"]

logger = logging.getLogger(__name__)

ORPHAN_TERM_TIMEOUT_S = 2.0


def cmdline_of(pid: int) -> list[str] | None:
    """The argv of a live process, or None when there is no such process (or it is a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None  # zombies and kernel threads have an empty cmdline
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


class ProcessRegistry:
    """room id -> (pid, argv) on disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, room_id: str) -> Path:
        return self.directory / f"{room_id}.json"

    def record(self, room_id: str, pid: int, argv: Sequence[str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self._path(room_id).with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "argv": list(argv)}))
        os.replace(tmp, self._path(room_id))

    def forget(self, room_id: str) -> None:
        self._path(room_id).unlink(missing_ok=True)

    def recorded(self) -> dict[str, tuple[int, list[str]]]:
        out: dict[str, tuple[int, list[str]]] = {}
        if not self.directory.exists():
            return out
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                out[path.stem] = (int(data["pid"]), [str(a) for a in data["argv"]])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("ignoring unreadable pid file %s: %s", path, exc)
        return out

    async def kill_orphans(self) -> list[int]:
        """Kill every recorded process still running its recorded command; forget all records."""
        victims: list[int] = []
        for room_id, (pid, argv) in self.recorded().items():
            if cmdline_of(pid) == argv:
                logger.warning(
                    "killing orphan ffmpeg of room %s (pid %d) left by a previous run", room_id, pid
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                victims.append(pid)
            self.forget(room_id)
        deadline = asyncio.get_running_loop().time() + ORPHAN_TERM_TIMEOUT_S
        while victims and any(cmdline_of(p) is not None for p in victims):
            if asyncio.get_running_loop().time() > deadline:
                for pid in victims:
                    if cmdline_of(pid) is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                break
            await asyncio.sleep(0.05)
        # a SIGKILLed orphan is gone once it is a zombie or reaped (init is its parent now)
        deadline = asyncio.get_running_loop().time() + ORPHAN_TERM_TIMEOUT_S
        while any(cmdline_of(p) is not None for p in victims):
            if asyncio.get_running_loop().time() > deadline:
                logger.error("orphan ffmpeg processes survive SIGKILL: %s", victims)
                break
            await asyncio.sleep(0.05)
        return victims
