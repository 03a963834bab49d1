"""Reconcile rooms and modules (docs/architecture.md, Reconciliation): finish removals, migrate rooms.

For a room:
- ``removing`` and neither a janus nor a mixer record left (the modules have let go): delete
  every key of the room at once, in a transaction that checks they are still gone;
- ``onair`` on a module that must be left (its heartbeat is gone for longer than the grace
  period; it is unhealthy; or it is marked draining/drained/unready): move the room to a pickable module by
  one transaction on livemeta (generation + 1, old slot released, new slot taken, and one
  outbox key per ``rtc.events.rooms.<roomId>.migrated`` event, roomstore.py), then publish the
  events and delete their outbox keys. The message id is
  ``<roomId>.migrated.<generation>.<kind>``, so a retried publish is dropped by JetStream; an
  event whose publish failed, or whose process died first, stays in etcd and the room's next
  run publishes it before anything else (at start and every housekeeping pass ``scan_outbox``
  finds such rooms). If
  no module can take the room it stays onair where it is and the run fails with Unavailable:
  the scheduler logs it and retries with backoff, and a module event re-enqueues it.

**Grace.** A module whose heartbeat is gone (a SIGTERM revokes the lease, a kill -9 lets it
expire) keeps its rooms for ``grace_s`` (``MODULE_GRACE_PERIOD``), counted from when this
process first saw it missing (``modules.Absences``): a module process that restarts in time
adopts its rooms where they are, nothing moves and nobody is told to reconnect. A room in its
module's grace is enqueued again for the grace's end through the scheduler; if the heartbeat
returns first, that run finds nothing to do. Marks have no grace.

For a module (heartbeat or mark changed): start or forget its absence, and enqueue the onair
rooms that must leave a module or wait out its grace, so a death, a drain or a newly available
module is acted on at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from common.errors import Conflict, Unavailable
from common.etcd import Compare
from common.keys import Collection, Kind, StateKey
from common.reconcile import Interest, StateCache, Target
from common.records import LiveMeta, LiveStatus, MigrationKind, MigrationReason, RoomMigrated
from svc_rooms import metrics
from svc_rooms.modules import Absences, assigned_counts, module_state
from svc_rooms.resources import ResourceManager
from svc_rooms.roomstore import RoomStore, Slot
from svc_rooms.service import Clock, utc_now

__all__ = ["DEFAULT_MODULE_GRACE_S", "INTERESTS", "RoomReconciler", "migration_msg_id"]

logger = logging.getLogger(__name__)

DEFAULT_MODULE_GRACE_S = 15.0

_MODULE_KINDS = frozenset({Kind.HEARTBEAT.value, Kind.MARK.value})

# What svc_rooms' reconcile runtime watches (its RTC_STATE consumer's filter subjects); the
# contract registry's consumers are tested against it (tests/unit/common/test_contract_consumers.py).
INTERESTS: tuple[Interest, ...] = (
    Interest(
        Collection.ROOMS.value,
        frozenset({Kind.META.value, Kind.LIVEMETA.value, Kind.JANUS.value, Kind.MIXER.value}),
    ),
    Interest(Collection.JANUSES.value, _MODULE_KINDS),
    Interest(Collection.MIXERS.value, _MODULE_KINDS),
)

# A deferred run lands this much after the grace ends, so it does not find a sliver left.
_GRACE_MARGIN_S = 0.05

_KINDS = (
    (MigrationKind.JANUS, Collection.JANUSES),
    (MigrationKind.MIXER, Collection.MIXERS),
)


def migration_msg_id(room_id: str, generation: int, kind: MigrationKind) -> str:
    return f"{room_id}.migrated.{generation}.{kind.value}"


@attrs.frozen(kw_only=True)
class _Move:
    kind: MigrationKind
    collection: Collection
    from_: str
    reason: MigrationReason


class RoomReconciler:
    """``reconcile(target, view)`` for the runtime; see the module doc."""

    def __init__(
        self,
        store: RoomStore,
        resources: ResourceManager,
        cache: StateCache,
        enqueue: Callable[[Target, float], None],
        *,
        grace_s: float = DEFAULT_MODULE_GRACE_S,
        clock: Clock = utc_now,
    ) -> None:
        self.store = store
        self.absences = Absences(grace_s)
        self.resources = resources
        self.cache = cache
        self._enqueue = enqueue
        self.clock = clock
        # Rooms whose outbox in etcd may hold entries: their runs read it (others skip the read).
        self._outbox_rooms: set[str] = set()

    async def reconcile(self, target: Target, view: Mapping[str, Any]) -> None:
        if target.collection == Collection.ROOMS:
            await self._room(target.id, view)
        else:
            self._module(target)

    # -- modules ----------------------------------------------------------------------------

    def _module(self, target: Target) -> None:
        counts = assigned_counts(self.cache)
        collection = Collection(target.collection)
        # Look at the module itself first, so its grace starts when its heartbeat's delete
        # arrives (and is forgotten when it comes back), even before any room is looked at.
        state = module_state(self.cache, collection, target.id, counts)
        if state.assigned == 0:
            self.absences.forget(collection, target.id)
        else:
            self.absences.grace_left_s(
                collection, target.id, present=state.heartbeat is not None, now=self.clock()
            )
        for room_id, live in self.cache.items(Collection.ROOMS, Kind.LIVEMETA):
            if not (isinstance(live, LiveMeta) and live.status is LiveStatus.ONAIR):
                continue
            moves, wait_s = self._moves(live, counts)
            if moves or wait_s > 0:
                # A room in its module's grace re-enqueues itself for the grace's end.
                self._enqueue(Target(Collection.ROOMS, room_id), 0.0)

    def _moves(self, live: LiveMeta, counts: Mapping[tuple[str, str], int]) -> tuple[list[_Move], float]:
        """The moves due now, and the seconds until a deferred one (a module in its grace) is due."""
        moves: list[_Move] = []
        wait_s = 0.0
        now = self.clock()
        for kind, collection in _KINDS:
            module_id = live.janus_id if kind is MigrationKind.JANUS else live.mixer_id
            state = module_state(self.cache, collection, module_id, counts)
            left_s = self.absences.grace_left_s(
                collection, module_id, present=state.heartbeat is not None, now=now
            )
            reason = state.evacuate_reason
            if reason is None:
                continue
            if reason is MigrationReason.LEASE_EXPIRED and left_s > 0 and not state.is_marked_away:
                wait_s = left_s if wait_s == 0 else min(wait_s, left_s)
                continue
            moves.append(_Move(kind=kind, collection=collection, from_=module_id, reason=reason))
        return moves, wait_s

    # -- rooms ------------------------------------------------------------------------------

    async def _room(self, room_id: str, view: Mapping[str, Any]) -> None:
        await self._flush(room_id)
        live = view.get(Kind.LIVEMETA)
        if not isinstance(live, LiveMeta):
            return
        if live.status is LiveStatus.REMOVING:
            if Kind.JANUS not in view and Kind.MIXER not in view:
                await self._finish_removal(room_id)
            return
        moves, wait_s = self._moves(live, assigned_counts(self.cache))
        if wait_s > 0:
            # Come back when the grace is over (the scheduler holds the deferral; an earlier
            # run, e.g. the heartbeat's return, finds nothing to do and needs no cancelling).
            self._enqueue(Target(Collection.ROOMS, room_id), wait_s + _GRACE_MARGIN_S)
        if moves:
            await self._migrate(room_id, live, moves)

    async def _finish_removal(self, room_id: str) -> None:
        room = await self.store.read_room(room_id)
        live = room.livemeta.record if room.livemeta is not None else None
        if live is None or live.status is not LiveStatus.REMOVING or room.janus or room.mixer:
            return  # changed meanwhile; its own event brings us back
        if not await self.store.delete_room(room, require_absent=(Kind.JANUS, Kind.MIXER)):
            raise Conflict("room changed while being deleted", room_id=room_id)
        metrics.HOUSEKEEPING_DELETIONS.labels(rule="removed").inc()
        logger.info("room %s: removing -> deleted (modules let go)", room_id)

    async def _migrate(self, room_id: str, live: LiveMeta, moves: list[_Move]) -> None:
        entry = self.cache.entry(StateKey(Collection.ROOMS, room_id, Kind.LIVEMETA))
        if entry is None:
            return
        targets: list[tuple[_Move, Slot]] = []
        blocked: list[_Move] = []
        for move in moves:
            slot = await self.resources.pick_slot(move.collection, exclude={move.from_})
            if slot is None:
                blocked.append(move)
            else:
                targets.append((move, slot))
        if targets:
            await self._commit_moves(room_id, live, entry.mod_revision, targets)
        if blocked:
            for move in blocked:
                metrics.MIGRATION_BLOCKED.labels(kind=move.kind.value).inc()
            what = ", ".join(f"{m.collection.value} {m.from_} ({m.reason.value})" for m in blocked)
            raise Unavailable(
                f"room {room_id} must leave {what} but no other module is available; "
                "it stays onair there, retrying",
                room_id=room_id,
            )

    async def _commit_moves(
        self, room_id: str, live: LiveMeta, mod_revision: int, targets: list[tuple[_Move, Slot]]
    ) -> None:
        generation = live.generation + 1
        changes: dict[str, Any] = {"generation": generation}
        release: list[Slot] = []
        for move, slot in targets:
            changes["janus_id" if move.kind is MigrationKind.JANUS else "mixer_id"] = slot.module_id
            old = await self.store.find_slot(move.collection, move.from_, room_id)
            if old is not None:
                release.append(old)
        new_live = attrs.evolve(live, **changes)
        now = self.clock()
        outbox = [
            self.store.outbox_entry(
                room_id,
                migration_msg_id(room_id, generation, move.kind),
                RoomMigrated(
                    room_id=room_id,
                    kind=move.kind,
                    from_=move.from_,
                    to=slot.module_id,
                    generation=generation,
                    reason=move.reason,
                    at=now,
                ),
            )
            for move, slot in targets
        ]
        live_skey = StateKey(Collection.ROOMS, room_id, Kind.LIVEMETA)
        # The events are committed with the move (an outbox key each), so a crash before the
        # publish below cannot lose them: the next publisher finds them in etcd.
        revision = await self.store.commit(
            [Compare.mod_revision_is(self.store.key(live_skey), mod_revision)],
            puts=[(live_skey, new_live)],
            acquire=[(slot, room_id) for _, slot in targets],
            release=release,
            outbox=outbox,
        )
        if revision is None:
            raise Conflict("room or slot changed during migration", room_id=room_id)
        self._outbox_rooms.add(room_id)
        for move, slot in targets:
            metrics.MIGRATIONS.labels(kind=move.kind.value, reason=move.reason.value).inc()
            logger.warning(
                "room %s migrated: %s %s -> %s (%s), generation %d",
                room_id,
                move.kind.value,
                move.from_,
                slot.module_id,
                move.reason.value,
                generation,
            )
        await self._flush(room_id)

    # -- outbox -----------------------------------------------------------------------------

    async def scan_outbox(self) -> int:
        """Find events committed but not published (a crash, NATS away, another instance) and
        enqueue their rooms, whose next run publishes them; at start and every housekeeping pass."""
        entries = await self.store.read_outbox()
        rooms = {e.room_id for e in entries}
        self._outbox_rooms.update(rooms)
        for room_id in sorted(rooms):
            self._enqueue(Target(Collection.ROOMS, room_id), 0.0)
        if entries:
            logger.info("outbox: %d unpublished events of %d rooms", len(entries), len(rooms))
        return len(entries)

    async def _flush(self, room_id: str) -> None:
        """Publish the room's outbox, oldest first, deleting each entry once JetStream took it.

        A publish that fails raises: the room's run fails and the scheduler retries it, and
        nothing else happens to the room before its events are out. Each event keeps its
        message id, so one published twice (a crash between publish and delete) is stored once
        within JetStream's 2-minute dedup window.
        """
        if room_id not in self._outbox_rooms:
            return
        for entry in await self.store.read_outbox(room_id):
            await self.store.publish_event(
                self.store.event_subject(room_id, "migrated"), entry.event, msg_id=entry.msg_id
            )
            await self.store.delete_outbox(entry)
        self._outbox_rooms.discard(room_id)
