"""The AudioBridge rooms and forwarders this Janus manager holds, and the operations on them.

``RoomService.held`` maps our roomId to the Janus room built for it. The mapping can always be
recovered from Janus itself: every room's ``description`` is its roomId and its ``secret`` is
derived (HMAC of the admin secret, the Janus id, the roomId and the Janus room id), so after a
manager crash :meth:`RoomService.rebuild` adopts what runs instead of duplicating it.

Fixed against the reference system's Janus manager: forwarders are stopped with
``stop_rtp_forward`` before a room is destroyed; every plugin error is an error (only "no such
room" on teardown is accepted); rooms no longer assigned here are destroyed on rebuild; a room
lost by Janus (restart) is noticed by :meth:`RoomService.find_lost`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping

import attrs

from common.errors import AppError, Conflict, NotFound, log_error
from common.ids import is_valid_id
from svc_janus.audiobridge import AudioBridge, Forwarder

__all__ = ["CREATE_ATTEMPTS", "HeldRoom", "RoomService", "Wanted", "random_room_number", "room_secret"]

logger = logging.getLogger(__name__)

CREATE_ATTEMPTS = 5
ROOM_NUMBER_MIN = 100_000
ROOM_NUMBER_MAX = 999_999


def room_secret(admin_secret: str, janus_id: str, room_id: str, janus_room_id: int) -> str:
    """A room's secret: only holders of the admin secret can change or destroy the room."""
    msg = f"{janus_id}/{room_id}/{janus_room_id}".encode()
    return hmac.new(admin_secret.encode(), msg, hashlib.sha256).hexdigest()[:32]


def random_room_number() -> int:
    """A random six-digit AudioBridge room id."""
    return ROOM_NUMBER_MIN + secrets.randbelow(ROOM_NUMBER_MAX - ROOM_NUMBER_MIN + 1)


@attrs.define
class HeldRoom:
    """A Janus room this manager built (or adopted) for ``room_id``."""

    room_id: str
    janus_room_id: int
    secret: str
    pin: str | None  # None: unknown (adopted after a restart); the next reconcile sets it
    forwarder: Forwarder | None = None


@attrs.frozen
class Wanted:
    """What etcd says a room assigned here should have (input of rebuild)."""

    janus_room_id: int | None  # the id our record names, preferred when duplicates exist
    forward_to: tuple[str, int] | None


class RoomService:
    """Create, forward, tear down and recover AudioBridge rooms on one Janus."""

    def __init__(
        self,
        bridge: AudioBridge,
        *,
        janus_id: str,
        admin_secret: str,
        allow_rtp_participants: bool = True,
    ) -> None:
        self._bridge = bridge
        self.janus_id = janus_id
        self._admin_secret = admin_secret
        self.allow_rtp_participants = allow_rtp_participants
        self.held: dict[str, HeldRoom] = {}

    def secret_for(self, room_id: str, janus_room_id: int) -> str:
        return room_secret(self._admin_secret, self.janus_id, room_id, janus_room_id)

    # -- rooms -----------------------------------------------------------------------------

    async def ensure_audiobridge_room(
        self, room_id: str, *, pin: str, preferred_id: int | None = None
    ) -> HeldRoom:
        """The room's Janus room, created if missing (random id, retried on collision)."""
        held = self.held.get(room_id)
        if held is not None:
            if held.pin != pin:
                await self._bridge.edit_pin(held.janus_room_id, secret=held.secret, pin=pin)
                logger.info("room %s: pin of Janus room %d set", room_id, held.janus_room_id)
                held.pin = pin
            return held
        candidates = [random_room_number() for _ in range(CREATE_ATTEMPTS)]
        if preferred_id is not None:
            # Same id as before a Janus restart: fewer changes for whoever cached it.
            candidates.insert(0, preferred_id)
        for number in candidates:
            secret = self.secret_for(room_id, number)
            try:
                await self._bridge.create_audiobridge_room(
                    number,
                    description=room_id,
                    secret=secret,
                    pin=pin,
                    allow_rtp_participants=self.allow_rtp_participants,
                )
            except Conflict:
                logger.info("room %s: Janus room id %d taken, trying another", room_id, number)
                continue
            held = HeldRoom(room_id=room_id, janus_room_id=number, secret=secret, pin=pin)
            self.held[room_id] = held
            logger.info("room %s: Janus room %d created", room_id, number)
            return held
        raise Conflict(f"no free AudioBridge room id after {CREATE_ATTEMPTS} attempts", room_id=room_id)

    async def teardown_audiobridge_room(self, room_id: str) -> None:
        """Stop the room's forwarder, then destroy the room (already gone is fine)."""
        held = self.held.get(room_id)
        if held is None:
            return
        await self.stop_forwarder(room_id)
        with contextlib.suppress(NotFound):
            await self._bridge.destroy_audiobridge_room(held.janus_room_id, secret=held.secret)
        self.held.pop(room_id, None)
        logger.info("room %s: Janus room %d destroyed", room_id, held.janus_room_id)

    # -- forwarders --------------------------------------------------------------------------

    async def ensure_forwarder(self, room_id: str, host: str, port: int) -> Forwarder:
        """Forward the room's mix to host:port; a forwarder to elsewhere is stopped first."""
        held = self.held[room_id]
        current = held.forwarder
        if current is not None and (current.host, current.port) == (host, port):
            return current
        if current is not None:
            await self.stop_forwarder(room_id)
        held.forwarder = await self._bridge.rtp_forward(
            held.janus_room_id, secret=held.secret, host=host, port=port
        )
        logger.info(
            "room %s: forwarder %s:%d -> %s:%d (stream %d)",
            room_id,
            current.host if current else "-",
            current.port if current else 0,
            host,
            port,
            held.forwarder.stream_id,
        )
        return held.forwarder

    async def stop_forwarder(self, room_id: str) -> None:
        held = self.held.get(room_id)
        if held is None or held.forwarder is None:
            return
        with contextlib.suppress(NotFound):
            await self._bridge.stop_rtp_forward(
                held.janus_room_id, secret=held.secret, stream_id=held.forwarder.stream_id
            )
        logger.info("room %s: forwarder %d stopped", room_id, held.forwarder.stream_id)
        held.forwarder = None

    # -- recovery ----------------------------------------------------------------------------

    async def find_lost(self) -> list[str]:
        """Rooms we hold that Janus no longer has (it restarted); they are forgotten here."""
        before = dict(self.held)
        present = {r.room for r in await self._bridge.list_audiobridge_rooms()}
        lost: list[str] = []
        for room_id, held in before.items():
            # Only a room that existed before the list was asked for can be missing from it,
            # and only if nobody tore it down or replaced it meanwhile.
            if held.janus_room_id not in present and self.held.get(room_id) is held:
                del self.held[room_id]
                lost.append(room_id)
        return lost

    async def rebuild(self, wanted: Mapping[str, Wanted]) -> None:
        """Adopt the Janus rooms of rooms assigned here, destroy orphans and duplicates, and
        stop forwarders that do not point at the room's mixer; reconcile creates the rest."""
        self.held.clear()
        by_room: dict[str, list[int]] = {}
        for info in await self._bridge.list_audiobridge_rooms():
            if is_valid_id(info.description):
                by_room.setdefault(info.description, []).append(info.room)
        for room_id, numbers in sorted(by_room.items()):
            want = wanted.get(room_id)
            keep: int | None = None
            if want is not None:
                keep = want.janus_room_id if want.janus_room_id in numbers else numbers[0]
            for number in numbers:
                if number != keep:
                    await self._destroy_foreign(room_id, number)
            if keep is None or want is None:
                continue
            held = HeldRoom(
                room_id=room_id,
                janus_room_id=keep,
                secret=self.secret_for(room_id, keep),
                pin=None,
            )
            try:
                forwarders = await self._bridge.list_forwarders(keep, secret=held.secret)
            except AppError as exc:
                # Not ours after all (another secret): leave it alone, reconcile makes a new one.
                log_error(logger, exc, f"room {room_id}: Janus room {keep} not adoptable")
                continue
            for fw in forwarders:
                if held.forwarder is None and want.forward_to == (fw.host, fw.port):
                    held.forwarder = fw
                    continue
                with contextlib.suppress(NotFound):
                    await self._bridge.stop_rtp_forward(keep, secret=held.secret, stream_id=fw.stream_id)
                logger.info(
                    "room %s: stopped stale forwarder %d to %s:%d", room_id, fw.stream_id, fw.host, fw.port
                )
            self.held[room_id] = held
            logger.info("room %s: adopted Janus room %d", room_id, keep)

    async def _destroy_foreign(self, room_id: str, number: int) -> None:
        try:
            await self._bridge.destroy_audiobridge_room(number, secret=self.secret_for(room_id, number))
            logger.info("room %s: orphan Janus room %d destroyed", room_id, number)
        except NotFound:
            pass
        except AppError as exc:
            log_error(logger, exc, f"room {room_id}: orphan Janus room {number} not destroyed")
