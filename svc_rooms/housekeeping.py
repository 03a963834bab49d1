"""Housekeeping: the periodic pass over every room in etcd (the reference system's rules, bugs fixed).

Rules, each applied in one etcd transaction that checks the room did not change since it was
read (so a concurrent API call or module write wins and the rule waits for the next pass):

- ``removed``: a removing room whose janus and mixer records are gone is deleted (all keys);
- ``forced``: a removing room still holding records ``removing_grace_s`` after its discardAt
  is deleted anyway, with a warning (a module that never lets go must not pin it forever);
- ``never_started``: meta but no livemeta for longer than ``start_timeout_s`` is deleted
  (creation writes both at once, so this only cleans up after older versions or manual writes);
- ``orphan_records``: janus/mixer records with neither meta nor livemeta, older than the grace;
- ``max_age``: an onair room older than ``max_age_s`` (0 = unlimited) is stopped, i.e. goes
  through ``removing`` like a DELETE, so its modules tear down before its keys go;
- ``orphan_slot``: an assignment slot whose room's livemeta does not point at that module.

Every onair room is also handed to the reconciler (migration check), so a missed event costs
at most one interval, and the outbox is scanned for events committed but never published (their
publisher died), which the reconciler then publishes. ``clock`` is injectable: tests drive each
rule with a fake time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from common.errors import log_error
from common.keys import Collection, Kind
from common.reconcile import Target
from common.records import JanusRecord, LiveMeta, LiveStatus, MixerRecord
from svc_rooms import metrics
from svc_rooms.roomstore import RoomRecords, RoomStore
from svc_rooms.service import Clock, RoomService, utc_now

__all__ = ["DEFAULT_REMOVING_GRACE_S", "DEFAULT_START_TIMEOUT_S", "Housekeeper"]

logger = logging.getLogger(__name__)

DEFAULT_REMOVING_GRACE_S = 60.0
DEFAULT_START_TIMEOUT_S = 600.0


class Housekeeper:
    """One ``run_once`` per interval; see the module doc for the rules."""

    def __init__(
        self,
        store: RoomStore,
        service: RoomService,
        enqueue: Callable[[Target, float], None],
        *,
        max_age_s: float,
        removing_grace_s: float = DEFAULT_REMOVING_GRACE_S,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        scan_outbox: Callable[[], Awaitable[int]] | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.store = store
        self.service = service
        self._enqueue = enqueue
        self.max_age_s = max_age_s
        self.removing_grace_s = removing_grace_s
        self.start_timeout_s = start_timeout_s
        self._scan_outbox = scan_outbox
        self.clock = clock

    async def run_forever(self, interval_s: float) -> None:
        """Run a pass every ``interval_s`` (the first after one interval) until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_error(logger, exc, "housekeeping pass failed; the next one retries")

    async def run_once(self) -> Counter[str]:
        """One pass; returns how often each rule acted."""
        metrics.HOUSEKEEPING_RUNS.inc()
        now = self.clock()
        done: Counter[str] = Counter()
        rooms = await self.store.read_all()
        for room in rooms.values():
            try:
                rule = await self._room(room, now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_error(logger, exc, "housekeeping of a room failed", room_id=room.room_id)
                continue
            if rule:
                done[rule] += 1
                metrics.HOUSEKEEPING_DELETIONS.labels(rule=rule).inc()
        try:
            freed = await self._slots(rooms)
            if freed:
                done["orphan_slot"] += freed
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_error(logger, exc, "housekeeping of assignment slots failed")
        if self._scan_outbox is not None:
            try:
                await self._scan_outbox()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_error(logger, exc, "outbox scan failed")
        if done:
            logger.info("housekeeping: %s", dict(done))
        return done

    def _older(self, since: datetime, seconds: float, now: datetime) -> bool:
        return now - since > timedelta(seconds=seconds)

    async def _room(self, room: RoomRecords, now: datetime) -> str | None:
        room_id = room.room_id
        if room.meta is None and room.livemeta is None:
            stamps = [v.record.updated_at for v in (room.janus, room.mixer) if v is not None]
            records_ok = all(isinstance(v.record, JanusRecord | MixerRecord) for v in room.present())
            if (
                records_ok
                and stamps
                and self._older(max(stamps), self.removing_grace_s, now)
                and await self.store.delete_room(room)
            ):
                logger.warning("room %s: deleted janus/mixer records left without a room", room_id)
                return "orphan_records"
            return None
        if room.livemeta is None:
            assert room.meta is not None
            if self._older(
                room.meta.record.created_at, self.start_timeout_s, now
            ) and await self.store.delete_room(room):
                logger.info("room %s: never started -> deleted", room_id)
                return "never_started"
            return None
        live: LiveMeta = room.livemeta.record
        if live.status is LiveStatus.REMOVING:
            if room.janus is None and room.mixer is None:
                if await self.store.delete_room(room, require_absent=(Kind.JANUS, Kind.MIXER)):
                    logger.info("room %s: removing -> deleted", room_id)
                    return "removed"
                return None
            discard_at = live.discard_at or now
            if self._older(discard_at, self.removing_grace_s, now) and await self.store.delete_room(room):
                held = [k.value for k in (Kind.JANUS, Kind.MIXER) if room.get(k) is not None]
                logger.warning(
                    "room %s: still holding %s %.0f s after removal -> force-deleted",
                    room_id,
                    "+".join(held),
                    (now - discard_at).total_seconds(),
                )
                return "forced"
            return None
        created_at = room.meta.record.created_at if room.meta is not None else live.created_at
        if self.max_age_s > 0 and self._older(created_at, self.max_age_s, now):
            if await self.service.stop(room):
                logger.info("room %s: onair longer than %.0f s -> removing", room_id, self.max_age_s)
                return "max_age"
            return None
        self._enqueue(Target(Collection.ROOMS, room_id), 0.0)
        return None

    async def _slots(self, rooms: dict[str, RoomRecords]) -> int:
        freed = 0
        for slot in await self.store.read_all_slots():
            room = rooms.get(slot.room_id)
            live = room.livemeta if room is not None else None
            record: LiveMeta | None = live.record if live is not None else None
            if record is not None and record.status is LiveStatus.ONAIR:
                held = record.janus_id if slot.collection is Collection.JANUSES else record.mixer_id
                if held == slot.module_id:
                    continue
            # The slot may belong to a create that committed after our room read: its
            # livemeta then exists with a newer revision, and the compare below fails.
            if await self.store.delete_slot(slot, room_livemeta=live, room_id=slot.room_id):
                freed += 1
                logger.warning(
                    "freed orphan slot %s/%s #%d (room %s)",
                    slot.collection.value,
                    slot.module_id,
                    slot.index,
                    slot.room_id,
                )
        return freed
