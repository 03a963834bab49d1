"""Reconcile one room: drive the mixer's FFmpeg and the room's mixer record to match etcd.

For room R with view {livemeta, mixer, janus} (the reconcile runtime's cache):

- it should run here when ``livemeta.status == onair`` and ``livemeta.mixerId`` is this mixer:
  ``Mixer.ensure_stream`` (start, or restart on exit / new nonce / new forwarder, i.e. another
  ``(janusId, janusRoomId, generation, forwarderStreamId)`` in a ``forwarding`` janus record /
  a stall the output watchdog found), then the
  record ``/rooms/R/mixer`` = {id, host, port, status ready, generation} is written if it differs,
  compared with the cached mod revision (a concurrent writer makes it a Conflict: retried);
- otherwise (removing, moved to another mixer, deleted): ``Mixer.teardown_stream`` (FFmpeg
  gone, ENDLIST, files removed, port freed) and the record is deleted only if it still names this
  mixer, at the mod revision read, so a record the new mixer wrote is never removed;
- when the room is gone from etcd altogether, its HLS dir is removed once it has not changed
  for ``HLS_DELETE_GRACE`` (the room is enqueued again for then).

``rebuild`` (before the first reconcile): kill the FFmpegs a crashed run left, reload port
reservations, clean up rooms reserved here that should not run, and remember HLS dirs of
deleted rooms for the grace-period cleanup.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from common import records
from common.ids import is_valid_id
from common.keys import StateKey
from common.reconcile import Interest, StateCache, Target
from common.state import ABSENT, StateStore
from svc_mixer import hls
from svc_mixer.service import Forwarder, Mixer, RoomSpec

__all__ = ["INTERESTS", "RoomReconciler", "forwarder_of", "should_run"]

logger = logging.getLogger(__name__)

ROOMS = "rooms"

# What svc_mixer's reconcile runtime watches (its RTC_STATE consumer's filter subjects); the
# contract registry's consumers are tested against it (tests/unit/common/test_contract_consumers.py).
INTERESTS: tuple[Interest, ...] = (Interest(ROOMS, frozenset({"livemeta", "mixer", "janus"})),)


def should_run(livemeta: records.LiveMeta | None, mixer_id: str) -> bool:
    return (
        livemeta is not None and livemeta.status is records.LiveStatus.ONAIR and livemeta.mixer_id == mixer_id
    )


def forwarder_of(janus: records.JanusRecord | None, generation: int | None = None) -> Forwarder | None:
    """The forwarder feeding the room, None while nothing forwards to it (no record, no Janus
    room yet, forwarder stopped). A new stream id is a new RTP stream even in the same Janus
    room (a room rebuilt after a Janus restart keeps its id).

    A record older than the room's ``generation`` (its livemeta's) is the previous assignment's:
    after the room moved to this mixer, that forwarder still sends to the old mixer until
    svc_janus moves it, so it feeds nothing here. Taking it for this mixer's input would make
    the new forwarder look like a replaced stream and restart the FFmpeg just started for the
    room (about a second more of silence on every mixer migration)."""
    if janus is None or janus.janus_room_id is None or janus.status is not records.JanusStatus.FORWARDING:
        return None
    if generation is not None and janus.generation < generation:
        return None
    return Forwarder(janus.janus_id, janus.janus_room_id, janus.generation, janus.forwarder_stream_id)


def _same_record(a: records.MixerRecord, b: records.MixerRecord) -> bool:
    return (a.id, a.host, a.port, a.status, a.generation) == (b.id, b.host, b.port, b.status, b.generation)


class RoomReconciler:
    """``reconcile`` and ``rebuild`` for the runtime; see the module doc."""

    def __init__(
        self,
        mixer: Mixer,
        store: StateStore,
        *,
        mixer_id: str,
        host: str,
        hls_delete_grace_s: float,
        changed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.mixer = mixer
        self.store = store
        self.mixer_id = mixer_id
        self.host = host
        self.hls_delete_grace_s = hls_delete_grace_s
        self._changed = changed
        self.cache: StateCache | None = None
        self.enqueue: Callable[[Target, float], None] | None = None
        self.leftover_dirs: list[str] = []

    def assigned(self) -> list[str]:
        """The rooms that should run here, as the runtime's cache sees them (for /health)."""
        if self.cache is None:
            return []
        return [
            room_id
            for room_id, meta in self.cache.items(ROOMS, "livemeta")
            if should_run(meta, self.mixer_id)
        ]

    def _mod_revision(self, room_id: str, kind: str) -> int | None:
        if self.cache is None:
            return None
        entry = self.cache.entry(StateKey(ROOMS, room_id, kind))
        return entry.mod_revision if entry else None

    async def reconcile(self, target: Target, view: Mapping[str, Any]) -> None:
        if target.collection != ROOMS:
            return
        room_id = target.id
        livemeta: records.LiveMeta | None = view.get("livemeta")
        record: records.MixerRecord | None = view.get("mixer")
        try:
            if should_run(livemeta, self.mixer_id):
                assert livemeta is not None
                await self._run(room_id, livemeta, record, view.get("janus"))
            else:
                await self._teardown(room_id, record, livemeta)
        finally:
            if self._changed is not None:
                await self._changed()

    async def _run(
        self,
        room_id: str,
        livemeta: records.LiveMeta,
        record: records.MixerRecord | None,
        janus: records.JanusRecord | None,
    ) -> None:
        spec = RoomSpec(
            room_id=room_id,
            nonce=livemeta.nonce,
            generation=livemeta.generation,
            forwarder=forwarder_of(janus, livemeta.generation),
        )
        port = await self.mixer.ensure_stream(spec)
        desired = records.MixerRecord(
            id=self.mixer_id,
            host=self.host,
            port=port,
            status=records.MixerStatus.READY,
            generation=livemeta.generation,
            updated_at=datetime.now(UTC),
        )
        if record is not None and _same_record(record, desired):
            return
        revision = self._mod_revision(room_id, "mixer")
        await self.store.put(
            StateKey(ROOMS, room_id, "mixer"), desired, expect=ABSENT if revision is None else revision
        )
        logger.info(
            "room %s: mixer record -> %s:%d (generation %d)", room_id, self.host, port, livemeta.generation
        )

    async def _teardown(
        self, room_id: str, record: records.MixerRecord | None, livemeta: records.LiveMeta | None
    ) -> None:
        # moved to another mixer: the stream goes on there, so no ENDLIST here
        moved = livemeta is not None and livemeta.status is records.LiveStatus.ONAIR
        await self.mixer.teardown_stream(room_id, end_playlist=not moved)
        if record is not None and record.id == self.mixer_id:
            revision = self._mod_revision(room_id, "mixer")
            if revision is not None:
                await self.store.delete(StateKey(ROOMS, room_id, "mixer"), expect=revision)
                logger.info("room %s: mixer record deleted", room_id)
        if livemeta is None:
            self._collect_hls_dir(room_id)

    def _collect_hls_dir(self, room_id: str) -> None:
        out = self.mixer.out_dir(room_id)
        age = hls.seconds_since_change(out)
        if age is None:
            return
        if age >= self.hls_delete_grace_s:
            hls.remove_dir(out)
            logger.info("room %s: HLS dir removed (%.0f s after its last change)", room_id, age)
        elif self.enqueue is not None:
            self.enqueue(Target(ROOMS, room_id), self.hls_delete_grace_s - age + 0.1)

    async def rebuild(self, cache: StateCache) -> None:
        self.cache = cache
        killed = await self.mixer.recover()
        if killed:
            logger.warning("rebuild: killed %d orphan ffmpeg process(es): %s", len(killed), killed)
        for room_id in self.mixer.pool.reserved():
            livemeta = cache.get(ROOMS, room_id, "livemeta")
            if not should_run(livemeta, self.mixer_id):
                moved = livemeta is not None and livemeta.status is records.LiveStatus.ONAIR
                await self.mixer.teardown_stream(room_id, end_playlist=not moved)
        hls_dir = self.mixer.settings.hls_dir
        if hls_dir.exists():
            self.leftover_dirs = sorted(
                p.name
                for p in hls_dir.iterdir()
                if p.is_dir() and is_valid_id(p.name) and cache.get(ROOMS, p.name, "livemeta") is None
            )
