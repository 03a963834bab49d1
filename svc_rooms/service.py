"""Room manager domain operations: rooms, module marks, module and room views, stats.

Every write that changes which module serves a room is one etcd transaction over the room's
keys and the modules' assignment slots (roomstore.py); so a room is either fully created
(meta + onair livemeta + one Janus slot + one mixer slot) or not at all, and no module ever
holds more rooms than its capacity. Imports no litestar, nats or aetcd (docs/conventions.md, Package layout).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from common.errors import Conflict, NotFound, Unavailable
from common.etcd import Compare
from common.ids import validate_module_id, validate_room_id
from common.keys import Collection, Kind, StateKey
from common.records import JanusRecord, LiveMeta, LiveStatus, Mark, MarkLabel, MixerRecord, RoomMeta
from common.state import StateStore
from svc_rooms import metrics
from svc_rooms.modules import MODULE_COLLECTIONS, ModuleState
from svc_rooms.resources import ResourceManager
from svc_rooms.roomstore import RoomRecords, RoomStore, Slot

__all__ = [
    "DEFAULT_MAX_ANCHORS",
    "MAX_ASSIGN_ATTEMPTS",
    "Clock",
    "ModuleRef",
    "RoomService",
    "RoomView",
    "utc_now",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

DEFAULT_MAX_ANCHORS = 3
# Each failed assignment transaction means another request took a slot we wanted, so the loop
# ends when slots run out; the bound only guards against a bug turning it into a spin.
MAX_ASSIGN_ATTEMPTS = 200
_STOP_ATTEMPTS = 5


def utc_now() -> datetime:
    return datetime.now(UTC)


@attrs.frozen(kw_only=True)
class ModuleRef:
    """A room's Janus or mixer: which module, its record's state, whether the module is healthy."""

    id: str
    state: str | None = None
    is_healthy: bool = False
    rtp_port: int | None = None


@attrs.frozen(kw_only=True)
class RoomView:
    room_id: str
    hls_url: str
    pin: str
    max_anchors: int
    created_at: datetime
    status: str | None
    generation: int = 0
    janus: ModuleRef | None = None
    mixer: ModuleRef | None = None
    discard_at: datetime | None = None


LiveAnchors = Callable[[str], Awaitable[int]]


class RoomService:
    """The operations behind the REST API (api.py) and housekeeping."""

    def __init__(
        self,
        store: RoomStore,
        states: StateStore,
        resources: ResourceManager,
        *,
        hls_adv_url: str,
        clock: Clock = utc_now,
        live_anchors: LiveAnchors | None = None,
    ) -> None:
        self.store = store
        # connected users of a room (svc_users' Redis hash, common/members.py); 0 without it
        self._live_anchors = live_anchors
        self.states = states
        self.resources = resources
        self.hls_adv_url = hls_adv_url if hls_adv_url.endswith("/") else hls_adv_url + "/"
        self.clock = clock

    # -- rooms ------------------------------------------------------------------------------

    async def create_room(
        self, room_id: str | None = None, pin: str | None = None, max_anchors: int | None = None
    ) -> RoomView:
        """Create the room and start it live; Conflict if it exists, Unavailable if no module."""
        room_id = validate_room_id(room_id) if room_id is not None else secrets.token_hex(10)
        meta = RoomMeta(
            pin=pin if pin is not None else secrets.token_hex(3),
            max_anchors=max_anchors or DEFAULT_MAX_ANCHORS,
            hls_path=f"{room_id}/stream.m3u8",
            created_at=self.clock(),
        )
        meta_key = self.store.room_key(room_id, Kind.META)
        live_key = self.store.room_key(room_id, Kind.LIVEMETA)
        if await self.store.etcd.get(meta_key) is not None:
            raise Conflict(f"Room {room_id} already exists", field="roomId")
        for _attempt in range(MAX_ASSIGN_ATTEMPTS):
            mixer = await self.resources.pick_slot(Collection.MIXERS)
            if mixer is None:
                metrics.ROOM_CREATE_FAILURES.labels(reason="no_mixer").inc()
                raise Unavailable("no available mixer", room_id=room_id)
            janus = await self.resources.pick_slot(Collection.JANUSES)
            if janus is None:
                metrics.ROOM_CREATE_FAILURES.labels(reason="no_janus").inc()
                raise Unavailable("no available Janus server", room_id=room_id)
            live = LiveMeta(
                status=LiveStatus.ONAIR,
                janus_id=janus.module_id,
                mixer_id=mixer.module_id,
                nonce=secrets.token_hex(10),
                generation=0,
                created_at=meta.created_at,
            )
            revision = await self.store.commit(
                [Compare.absent(meta_key), Compare.absent(live_key)],
                puts=[
                    (StateKey(Collection.ROOMS, room_id, Kind.META), meta),
                    (StateKey(Collection.ROOMS, room_id, Kind.LIVEMETA), live),
                ],
                acquire=[(janus, room_id), (mixer, room_id)],
            )
            if revision is not None:
                metrics.ROOMS_CREATED.inc()
                logger.info(
                    "room %s created onair on janus %s, mixer %s", room_id, janus.module_id, mixer.module_id
                )
                return self._view(room_id, meta, live, self._module_map())
            if await self.store.etcd.get(meta_key) is not None:
                raise Conflict(f"Room {room_id} already exists", field="roomId")
            # A slot we chose was taken meanwhile: pick again from fresh slot reads.
        metrics.ROOM_CREATE_FAILURES.labels(reason="contention").inc()
        raise Unavailable("could not assign modules (too much contention); retry", room_id=room_id)

    async def get_room(self, room_id: str) -> RoomView:
        room = await self.store.read_room(validate_room_id(room_id))
        if room.meta is None:
            raise NotFound(f"Room {room_id} not found", field="roomId")
        return self._room_view(room, self._module_map())

    async def list_rooms(self, *, limit: int, cursor: str | None) -> tuple[list[RoomView], str | None]:
        """Rooms sorted by id after ``cursor``, at most ``limit``; and the next cursor (or None)."""
        rooms = await self.store.read_all()
        ids = sorted(i for i, r in rooms.items() if r.meta is not None and (cursor is None or i > cursor))
        page = ids[:limit]
        next_cursor = page[-1] if len(ids) > limit and page else None
        modules = self._module_map()
        return [self._room_view(rooms[i], modules) for i in page], next_cursor

    async def stop_room(self, room_id: str) -> bool:
        """Mark the room removing (modules tear down; housekeeping deletes it). NotFound if unknown.

        Returns False when it already was removing (its discardAt is kept, so repeating a
        DELETE does not postpone the forced cleanup).
        """
        validate_room_id(room_id)
        for _attempt in range(_STOP_ATTEMPTS):
            room = await self.store.read_room(room_id)
            if room.meta is None:
                raise NotFound(f"Room {room_id} not found", field="roomId")
            if await self._stop(room):
                return True
            if room.livemeta is not None and room.livemeta.record.status is LiveStatus.REMOVING:
                return False
        raise Conflict(f"Room {room_id} kept changing while stopping; retry", field="roomId")

    async def stop(self, room: RoomRecords) -> bool:
        """Mark a room that was read removing; False if it changed meanwhile or already was."""
        return await self._stop(room)

    async def _stop(self, room: RoomRecords) -> bool:
        now = self.clock()
        live_skey = StateKey(Collection.ROOMS, room.room_id, Kind.LIVEMETA)
        live_key = self.store.key(live_skey)
        release: list[Slot] = []
        if room.livemeta is None:
            if room.meta is None:
                return False
            created_at = room.meta.record.created_at
            compare = Compare.absent(live_key)
            new = LiveMeta(
                status=LiveStatus.REMOVING,
                janus_id="",
                mixer_id="",
                nonce="",
                created_at=created_at,
                discard_at=now,
            )
        else:
            current: LiveMeta = room.livemeta.record
            if current.status is LiveStatus.REMOVING:
                return False
            compare = Compare.mod_revision_is(live_key, room.livemeta.mod_revision)
            new = attrs.evolve(
                current, status=LiveStatus.REMOVING, janus_id="", mixer_id="", nonce="", discard_at=now
            )
            for collection, module_id in (
                (Collection.JANUSES, current.janus_id),
                (Collection.MIXERS, current.mixer_id),
            ):
                slot = await self.store.find_slot(collection, module_id, room.room_id)
                if slot is not None:
                    release.append(slot)
        revision = await self.store.commit([compare], puts=[(live_skey, new)], release=release)
        if revision is not None:
            logger.info("room %s: -> removing", room.room_id)
            metrics.ROOMS_STOPPED.inc()
        return revision is not None

    async def live_anchors(self, room_id: str) -> int:
        return 0 if self._live_anchors is None else await self._live_anchors(room_id)

    async def room_stats(self, room_id: str) -> dict[str, Any]:
        """One room's live figures: connected anchors (any role) against its maxAnchors."""
        view = await self.get_room(room_id)
        return {
            "roomId": view.room_id,
            "status": view.status,
            "maxAnchors": view.max_anchors,
            "anchors": await self.live_anchors(view.room_id),
        }

    async def stats(self) -> dict[str, Any]:
        rooms = await self.store.read_all()
        by_status = {"onair": 0, "removing": 0, "starting": 0}
        total = 0
        participants = 0
        for room in rooms.values():
            if room.meta is None:
                continue
            total += 1
            if room.livemeta is None:
                by_status["starting"] += 1
            else:
                by_status[room.livemeta.record.status.value] += 1
                if room.livemeta.record.status is LiveStatus.ONAIR:
                    participants += await self.live_anchors(room.room_id)
        modules: dict[str, dict[str, int]] = {}
        for collection in MODULE_COLLECTIONS:
            states = self.resources.modules(collection)
            modules[collection.value] = {
                "total": len(states),
                "healthy": sum(1 for m in states if m.is_healthy),
                "pickable": sum(1 for m in states if m.is_pickable),
                "capacity": sum(m.capacity for m in states if m.is_healthy),
                "assigned": sum(m.assigned for m in states),
            }
        return {"rooms": {"total": total, "totalParticipants": participants, **by_status}, "modules": modules}

    # -- modules ----------------------------------------------------------------------------

    def modules(self) -> list[ModuleState]:
        return self.resources.modules()

    async def set_mark(self, collection: Collection, module_id: str, label: MarkLabel, ttl_s: int) -> None:
        """Label a module; ``ttl_s`` > 0 puts the mark on a lease of that many seconds."""
        validate_module_id(module_id)
        lease = await self.store.etcd.grant(ttl_s) if ttl_s > 0 else None
        await self.states.put(StateKey(collection, module_id, Kind.MARK), Mark(label=label), lease=lease)
        logger.info("%s %s marked %s (ttl %d s)", collection.value, module_id, label.value, ttl_s)

    async def delete_mark(self, collection: Collection, module_id: str) -> None:
        validate_module_id(module_id)
        await self.states.delete(StateKey(collection, module_id, Kind.MARK))
        logger.info("%s %s mark deleted", collection.value, module_id)

    # -- views ------------------------------------------------------------------------------

    def hls_url(self, meta: RoomMeta) -> str:
        return self.hls_adv_url + meta.hls_path

    def _module_map(self) -> dict[tuple[str, str], ModuleState]:
        return {(m.collection.value, m.id): m for m in self.resources.modules()}

    def _view(
        self,
        room_id: str,
        meta: RoomMeta,
        live: LiveMeta | None,
        modules: Mapping[tuple[str, str], ModuleState],
    ) -> RoomView:
        return RoomView(
            room_id=room_id,
            hls_url=self.hls_url(meta),
            pin=meta.pin,
            max_anchors=meta.max_anchors,
            created_at=meta.created_at,
            status=live.status.value if live is not None else None,
            generation=live.generation if live is not None else 0,
            janus=_ref(modules, Collection.JANUSES, live.janus_id) if live is not None else None,
            mixer=_ref(modules, Collection.MIXERS, live.mixer_id) if live is not None else None,
            discard_at=live.discard_at if live is not None else None,
        )

    def _room_view(self, room: RoomRecords, modules: Mapping[tuple[str, str], ModuleState]) -> RoomView:
        assert room.meta is not None
        live = room.livemeta.record if room.livemeta is not None else None
        view = self._view(room.room_id, room.meta.record, live, modules)
        if view.janus is not None and room.janus is not None:
            janus: JanusRecord = room.janus.record
            if janus.janus_id == view.janus.id:
                view = attrs.evolve(view, janus=attrs.evolve(view.janus, state=janus.status.value))
        if view.mixer is not None and room.mixer is not None:
            mixer: MixerRecord = room.mixer.record
            if mixer.id == view.mixer.id:
                view = attrs.evolve(
                    view, mixer=attrs.evolve(view.mixer, state=mixer.status.value, rtp_port=mixer.port)
                )
        return view


def _ref(
    modules: Mapping[tuple[str, str], ModuleState], collection: Collection, module_id: str
) -> ModuleRef | None:
    if not module_id:
        return None
    state = modules.get((collection.value, module_id))
    return ModuleRef(id=module_id, is_healthy=state is not None and state.is_healthy)
