"""The RTP port pool: even ports (RTP) with the odd port above for RTCP, reserved per room.

A reservation is a bookkeeping fact, not a bind probe: the pool hands out the lowest even port
of ``[start, end)`` that no room holds, remembers room -> port, and writes the set to a JSON
file in the state dir after every change, so a restarted mixer gives each room the port it had
(the Janus forwarder keeps pointing at the right place) and never hands a port out twice. A
port another program holds makes FFmpeg fail to bind; ``avoid(port)`` skips it from then on.
Exhaustion raises ``Unavailable``: the reconcile fails and the scheduler retries the room later.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from common.errors import Unavailable

__all__ = ["PortPool"]

logger = logging.getLogger(__name__)


class PortPool:
    """room id -> even RTP port in ``[start, end)``, persisted in ``path``."""

    def __init__(self, start: int, end: int, path: Path | None = None) -> None:
        self.start = start + (start % 2)  # first even port
        self.end = end
        self.path = path
        self._by_room: dict[str, int] = {}
        self._avoided: set[int] = set()

    @property
    def capacity(self) -> int:
        """How many rooms the range can hold (each takes an even port and the odd one above)."""
        return max(0, (self.end - self.start) // 2)

    def load(self) -> dict[str, int]:
        """Read the reservations a previous run of this mixer left (missing file: none)."""
        if self.path is None or not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable port reservations %s: %s", self.path, exc)
            return {}
        ports = raw.get("rooms", {}) if isinstance(raw, dict) else {}
        for room_id, port in ports.items():
            if isinstance(port, int) and self._in_range(port) and port not in self._by_room.values():
                self._by_room[str(room_id)] = port
        return dict(self._by_room)

    def _in_range(self, port: int) -> bool:
        return port % 2 == 0 and self.start <= port <= self.end - 2

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rooms": self._by_room}, sort_keys=True))
        os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new set, never half

    def get(self, room_id: str) -> int | None:
        return self._by_room.get(room_id)

    def reserved(self) -> dict[str, int]:
        return dict(self._by_room)

    def reserve(self, room_id: str) -> int:
        """The room's port: the one it holds, else the lowest free even port."""
        held = self._by_room.get(room_id)
        if held is not None:
            return held
        taken = set(self._by_room.values()) | self._avoided
        for port in range(self.start, self.end - 1, 2):
            if port not in taken:
                self._by_room[room_id] = port
                self._save()
                logger.debug("port %d reserved for room %s", port, room_id)
                return port
        raise Unavailable(
            f"RTP port pool exhausted: all {self.capacity} port pairs of {self.start}-{self.end} are taken",
            room_id=room_id,
            reserved=len(self._by_room),
        )

    def release(self, room_id: str) -> int | None:
        """Free the room's port (no-op if it holds none); returns the port freed."""
        port = self._by_room.pop(room_id, None)
        if port is not None:
            self._save()
            logger.debug("port %d released by room %s", port, room_id)
        return port

    def avoid(self, port: int) -> None:
        """Never hand ``port`` out again in this run (another program holds it)."""
        self._avoided.add(port)
