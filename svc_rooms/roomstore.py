"""Room state in etcd: multi-key transactions over room records and module assignment slots.

``common.state.StateStore`` writes one key per transaction; a room's life needs several keys to
change together, so this module builds those transactions (``EtcdStore.txn``) and then publishes
one state event per changed key, exactly as StateStore does (same subject, payload and message
id ``<key>@<revision>``; the state relay publishes whatever a crash or a NATS outage lost).

**Slots.** Each module has ``capacity`` numbered slots ``{slots}{collection}/{moduleId}/{n}``
(``n`` in ``0 .. capacity-1``, value = the room id). A room is assigned to a module only by
creating a free slot key in the *same* transaction that writes the livemeta, and a slot is
deleted in the same transaction that takes the room off the module (removing, migration,
deletion). So two concurrent creates can never both take the last slot: etcd lets exactly one
``create_revision == 0`` compare succeed. Slot keys live outside the state keyspace (default
prefix ``/slots/``), so the relay and every consumer ignore them.

**Outbox.** A domain event that must not be lost with a crash (``RoomMigrated``) is written in
the transaction of the change it reports, as ``{outbox}{roomId}/{msgId}`` (default prefix
``/outbox/``, outside the state keyspace too; value = the event's JSON), published afterwards
under ``msgId`` and deleted once JetStream has acknowledged it. A crash between commit and
publish leaves the key for the next publisher (docs/decisions.md, Durable domain events).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import attrs

from common import keys, records
from common.bus import Bus
from common.errors import AppError, Conflict
from common.etcd import Compare, DeleteOp, EtcdStore, PutOp
from common.ids import is_valid_id
from common.keys import Collection, Keyspace, Kind, StateKey
from common.state import Versioned, state_event_message

__all__ = ["OutboxEntry", "RoomRecords", "RoomStore", "Slot"]

logger = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class Slot:
    """One assignment slot of a module; ``mod_revision`` 0 means "free, to be created"."""

    collection: Collection
    module_id: str
    index: int
    key: str
    room_id: str = ""
    mod_revision: int = 0


@attrs.frozen(kw_only=True)
class OutboxEntry:
    """A committed domain event not yet acknowledged by JetStream."""

    room_id: str
    msg_id: str
    key: str
    event: records.RoomMigrated
    mod_revision: int = 0


@attrs.frozen(kw_only=True)
class RoomRecords:
    """Everything etcd holds for one room, each with its mod revision."""

    room_id: str
    meta: Versioned | None = None
    livemeta: Versioned | None = None
    janus: Versioned | None = None
    mixer: Versioned | None = None

    def get(self, kind: Kind) -> Versioned | None:
        value: Versioned | None = getattr(self, str(kind))
        return value

    def present(self) -> list[Versioned]:
        return [v for v in (self.meta, self.livemeta, self.janus, self.mixer) if v is not None]


class RoomStore:
    """Typed multi-key reads and transactions of room state (see the module doc)."""

    def __init__(
        self,
        etcd: EtcdStore,
        bus: Bus | None,
        keyspace: Keyspace,
        *,
        slots_prefix: str,
        outbox_prefix: str = "/outbox/",
    ) -> None:
        self.etcd = etcd
        self.bus = bus
        self.keyspace = keyspace
        self.slots_prefix = slots_prefix
        self.outbox_prefix = outbox_prefix

    # -- keys -------------------------------------------------------------------------------

    def key(self, skey: StateKey) -> str:
        return self.keyspace.state_key_of(skey)

    def room_key(self, room_id: str, kind: Kind) -> str:
        return self.keyspace.room_key(room_id, kind)

    def room_prefix(self, room_id: str) -> str:
        """``{rooms}{roomId}/``: every key of one room."""
        return self.keyspace.room_key(room_id, Kind.META)[: -len(Kind.META.value)]

    def slot_prefix(self, collection: Collection, module_id: str) -> str:
        self.keyspace.module_key(collection, module_id, Kind.HEARTBEAT)  # validates both
        return f"{self.slots_prefix}{Collection(collection).value}/{module_id}/"

    def slot(self, collection: Collection, module_id: str, index: int) -> Slot:
        return Slot(
            collection=Collection(collection),
            module_id=module_id,
            index=index,
            key=f"{self.slot_prefix(collection, module_id)}{index}",
        )

    def outbox_entry(self, room_id: str, msg_id: str, event: records.RoomMigrated) -> OutboxEntry:
        """The outbox entry of ``event`` (to be written by ``commit(outbox=...)``)."""
        self.keyspace.room_key(room_id, Kind.META)  # validates the id: it becomes a key segment
        return OutboxEntry(
            room_id=room_id, msg_id=msg_id, key=f"{self.outbox_prefix}{room_id}/{msg_id}", event=event
        )

    # -- reads ------------------------------------------------------------------------------

    async def read_room(self, room_id: str) -> RoomRecords:
        snap = await self.etcd.get_prefix(self.room_prefix(room_id))
        rooms = self._group(snap.kvs)
        return rooms.get(room_id, RoomRecords(room_id=room_id))

    async def read_all(self) -> dict[str, RoomRecords]:
        """Every room in etcd (one prefix read); undecodable values are logged and skipped."""
        snap = await self.etcd.get_prefix(self.keyspace.rooms)
        return self._group(snap.kvs)

    def _group(self, kvs: Sequence[Any]) -> dict[str, RoomRecords]:
        grouped: dict[str, dict[str, Versioned]] = {}
        for kv in kvs:
            skey = self.keyspace.parse(kv.key)
            if skey is None or skey.collection is not Collection.ROOMS:
                continue
            try:
                record = records.decode_record(skey.kind, kv.value, key=kv.key)
            except AppError as exc:
                logger.warning("skipping undecodable %s: %s", kv.key, exc)
                continue
            grouped.setdefault(skey.id, {})[skey.kind.value] = Versioned(
                key=skey, record=record, mod_revision=kv.mod_revision, lease=kv.lease
            )
        return {room_id: RoomRecords(room_id=room_id, **kinds) for room_id, kinds in grouped.items()}

    async def read_slots(self, collection: Collection, module_id: str) -> dict[int, Slot]:
        """index -> taken slot of one module."""
        prefix = self.slot_prefix(collection, module_id)
        snap = await self.etcd.get_prefix(prefix)
        taken: dict[int, Slot] = {}
        for kv in snap.kvs:
            tail = kv.key[len(prefix) :]
            if not tail.isdigit():
                continue
            index = int(tail)
            taken[index] = Slot(
                collection=Collection(collection),
                module_id=module_id,
                index=index,
                key=kv.key,
                room_id=kv.value.decode("utf-8", errors="replace"),
                mod_revision=kv.mod_revision,
            )
        return taken

    async def read_all_slots(self) -> list[Slot]:
        """Every slot of every module (housekeeping's orphan check)."""
        snap = await self.etcd.get_prefix(self.slots_prefix)
        out: list[Slot] = []
        for kv in snap.kvs:
            parts = kv.key[len(self.slots_prefix) :].split("/")
            if len(parts) != 3 or parts[0] not in (Collection.JANUSES, Collection.MIXERS):
                continue
            if not parts[2].isdigit():
                continue
            out.append(
                Slot(
                    collection=Collection(parts[0]),
                    module_id=parts[1],
                    index=int(parts[2]),
                    key=kv.key,
                    room_id=kv.value.decode("utf-8", errors="replace"),
                    mod_revision=kv.mod_revision,
                )
            )
        return out

    async def read_outbox(self, room_id: str | None = None) -> list[OutboxEntry]:
        """Pending outbox entries (of one room, or all), oldest write first."""
        prefix = self.outbox_prefix if room_id is None else f"{self.outbox_prefix}{room_id}/"
        snap = await self.etcd.get_prefix(prefix)
        out: list[OutboxEntry] = []
        for kv in snap.kvs:
            owner, _, msg_id = kv.key[len(self.outbox_prefix) :].partition("/")
            if not is_valid_id(owner) or not msg_id:
                continue
            try:
                event = records.decode_payload(records.RoomMigrated, kv.value, key=kv.key)
            except AppError as exc:
                # Not ours to guess at: left in etcd for a human, like any undecodable value.
                logger.warning("skipping undecodable outbox entry %s: %s", kv.key, exc)
                continue
            out.append(
                OutboxEntry(
                    room_id=owner, msg_id=msg_id, key=kv.key, event=event, mod_revision=kv.mod_revision
                )
            )
        return sorted(out, key=lambda e: e.mod_revision)

    async def delete_outbox(self, entry: OutboxEntry) -> None:
        """Drop a published entry (only the version read: a rewrite is published again)."""
        with contextlib.suppress(Conflict):  # gone already: another publisher was first
            await self.etcd.delete_if(entry.key, mod_revision=entry.mod_revision)

    async def find_slot(self, collection: Collection, module_id: str, room_id: str) -> Slot | None:
        """The slot ``room_id`` holds on a module, if any."""
        if not module_id:
            return None
        for slot in (await self.read_slots(collection, module_id)).values():
            if slot.room_id == room_id:
                return slot
        return None

    # -- transactions -----------------------------------------------------------------------

    async def commit(
        self,
        compares: Sequence[Compare],
        *,
        puts: Sequence[tuple[StateKey, Any]] = (),
        deletes: Sequence[StateKey] = (),
        acquire: Sequence[tuple[Slot, str]] = (),
        release: Sequence[Slot] = (),
        delete_prefixes: Sequence[str] = (),
        prefix_deleted: Sequence[StateKey] = (),
        outbox: Sequence[OutboxEntry] = (),
    ) -> int | None:
        """One transaction; the revision, or None when a compare failed (nothing written).

        ``acquire`` slots get a create-if-absent compare, ``release`` slots a compare that they
        still hold what was read. State events follow for ``puts``, ``deletes`` and the keys a
        prefix delete is known to remove (``prefix_deleted``: etcd rejects a txn whose delete
        ranges overlap, so those keys get no op of their own). ``outbox`` entries are written
        in the same transaction (no state event: the caller publishes them, see the module doc).
        """
        all_compares = list(compares)
        ops: list[PutOp | DeleteOp] = []
        for slot, room_id in acquire:
            all_compares.append(Compare.absent(slot.key))
            ops.append(PutOp(key=slot.key, value=room_id.encode()))
        for slot in release:
            all_compares.append(Compare.mod_revision_is(slot.key, slot.mod_revision))
            ops.append(DeleteOp(key=slot.key))
        ops.extend(PutOp(key=self.key(skey), value=records.encode_record(rec)) for skey, rec in puts)
        ops.extend(DeleteOp(key=self.key(skey)) for skey in deletes)
        ops.extend(DeleteOp(key=prefix, prefix=True) for prefix in delete_prefixes)
        ops.extend(PutOp(key=e.key, value=records.encode_record(e.event)) for e in outbox)
        ok, revision = await self.etcd.txn(all_compares, ops)
        if not ok:
            return None
        messages = [
            state_event_message(
                self.keyspace, skey, op=records.StateOp.PUT, revision=revision, value=records.unstructure(rec)
            )
            for skey, rec in puts
        ]
        messages.extend(
            state_event_message(self.keyspace, skey, op=records.StateOp.DELETE, revision=revision, value=None)
            for skey in (*deletes, *prefix_deleted)
        )
        await self._publish(messages)
        return revision

    async def _publish(self, messages: list[tuple[str, bytes, str]]) -> None:
        if self.bus is None or not messages:
            return
        try:
            await self.bus.publish_many([(s, p, m) for s, p, m in messages])
        except AppError as exc:
            # The commit stands; the relay publishes these changes under the same ids.
            logger.warning("%d state events not published now (%s); the relay will", len(messages), exc)

    async def publish_event(self, subject: str, record: Any, *, msg_id: str) -> None:
        """A domain event (rtc.events.*); raises Unavailable if NATS does not take it."""
        if self.bus is None:
            return
        await self.bus.publish(subject, records.encode_record(record), msg_id=msg_id)

    async def delete_room(self, room: RoomRecords, *, require_absent: Sequence[Kind] = ()) -> bool:
        """Delete every key of the room if nothing changed since ``room`` was read.

        ``require_absent`` kinds must still be missing (e.g. janus and mixer: the modules have
        let go). A prefix delete also takes keys written since the read; the relay reports those.
        """
        compares: list[Compare] = []
        for kind in (Kind.META, Kind.LIVEMETA, Kind.JANUS, Kind.MIXER):
            held = room.get(kind)
            key = self.room_key(room.room_id, kind)
            if held is not None:
                compares.append(Compare.mod_revision_is(key, held.mod_revision))
            elif kind in require_absent or kind in (Kind.META, Kind.LIVEMETA):
                compares.append(Compare.absent(key))
        revision = await self.commit(
            compares,
            delete_prefixes=[self.room_prefix(room.room_id)],
            prefix_deleted=[v.key for v in room.present()],
        )
        return revision is not None

    async def delete_slot(self, slot: Slot, *, room_livemeta: Versioned | None, room_id: str) -> bool:
        """Delete an orphan slot if neither it nor its room's livemeta changed since read."""
        if not is_valid_id(room_id):  # not a value we wrote: nothing to compare it with
            return await self.commit([], release=[slot]) is not None
        live_key = self.room_key(room_id, Kind.LIVEMETA)
        live_compare = (
            Compare.mod_revision_is(live_key, room_livemeta.mod_revision)
            if room_livemeta is not None
            else Compare.absent(live_key)
        )
        return await self.commit([live_compare], release=[slot]) is not None

    def event_subject(self, room_id: str, name: str) -> str:
        return keys.event_subject("rooms", room_id, name)
