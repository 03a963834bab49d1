"""Reconcile each room assigned to this Janus; rebuild on start; notice Janus restarts.

A room is *assigned* here when its meta exists and its livemeta is ``onair`` with
``janusId == JANUS_ID``. For an assigned room, reconcile makes sure that

1. an AudioBridge room exists (pin from meta), recorded as ``/rooms/<id>/janus``
   ``{janusId, janusRoomId, status: room_created, generation}``;
2. once ``/rooms/<id>/mixer`` names the room's mixer, one forwarder sends the mix there
   (status ``forwarding``, ``forwarderStreamId`` = its Janus stream id); a changed host/port
   stops the old forwarder before the new one. The stream id tells the mixer that its RTP
   stream was replaced (it restarts FFmpeg), also when a room rebuilt after a Janus restart
   keeps its Janus room id.

For any other room it stops the forwarder, destroys the Janus room and deletes the record, but
only while the record still names this Janus (a delete guarded by its mod_revision).

:class:`JanusMonitor` lists the Janus rooms every ``monitor_interval_s`` and at once after the
client opened a new session: rooms Janus lost (it restarted) are forgotten and reconciled
again, and once rebuilt each gets ``rtc.events.rooms.<roomId>.janus_restarted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
from prometheus_client import Counter, Gauge

from common import keys, records
from common.errors import AppError, log_error
from common.keys import StateKey
from common.reconcile import Interest, StateCache, Target
from common.state import ABSENT, StateStore
from common.supervisor import SupervisedTask
from svc_janus.service import RoomService, Wanted

__all__ = ["INTERESTS", "JanusMonitor", "RoomReconciler", "is_assigned"]

# What svc_janus' reconcile runtime watches (its RTC_STATE consumer's filter subjects); the
# contract registry's consumers are tested against it (tests/unit/common/test_contract_consumers.py).
INTERESTS: tuple[Interest, ...] = (
    Interest(keys.Collection.ROOMS.value, frozenset({"meta", "livemeta", "mixer", "janus"})),
)

logger = logging.getLogger(__name__)

ROOMS_HELD = Gauge("svc_janus_rooms", "AudioBridge rooms held by this Janus manager")
FORWARDERS = Gauge("svc_janus_forwarders", "RTP forwarders held by this Janus manager")
ROOMS_LOST = Counter("svc_janus_rooms_lost_total", "Rooms Janus lost (restart) and that were rebuilt")
RESTARTS = Counter("svc_janus_restarts_detected_total", "Janus restarts noticed (rooms lost)")

Publish = Callable[[str, bytes], Awaitable[Any]]
Enqueue = Callable[[Target], None]


def is_assigned(view: Mapping[str, Any], janus_id: str) -> bool:
    """Whether the room in ``view`` should have an AudioBridge room on this Janus."""
    livemeta = view.get("livemeta")
    return (
        view.get("meta") is not None
        and livemeta is not None
        and livemeta.status is records.LiveStatus.ONAIR
        and livemeta.janus_id == janus_id
    )


def _forward_to(view: Mapping[str, Any]) -> tuple[str, int] | None:
    mixer: records.MixerRecord | None = view.get("mixer")
    livemeta: records.LiveMeta | None = view.get("livemeta")
    # A mixer record left by the room's previous mixer (migration) is not a target.
    if mixer is None or livemeta is None or mixer.id != livemeta.mixer_id:
        return None
    return mixer.host, mixer.port


def _same(a: records.JanusRecord | None, b: records.JanusRecord) -> bool:
    return a is not None and attrs.evolve(a, updated_at=b.updated_at) == b


class RoomReconciler:
    """The reconcile and rebuild hooks of the runtime, plus the restart check."""

    def __init__(
        self,
        service: RoomService,
        store: StateStore,
        publish: Publish,
        *,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.service = service
        self.store = store
        self.janus_id = service.janus_id
        self._publish = publish
        self._on_change = on_change
        self._restarted: set[str] = set()
        self.enqueue: Enqueue | None = None
        self.restarts_detected = 0

    def _skey(self, room_id: str) -> StateKey:
        return StateKey("rooms", room_id, "janus")

    async def reconcile(self, target: Target, view: Mapping[str, Any]) -> None:
        if target.collection != "rooms":
            return
        try:
            if is_assigned(view, self.janus_id):
                await self._ensure(target.id, view)
            else:
                await self._teardown(target.id, view)
        finally:
            ROOMS_HELD.set(len(self.service.held))
            FORWARDERS.set(sum(1 for h in self.service.held.values() if h.forwarder is not None))
            if self._on_change is not None:
                await self._on_change()

    async def _ensure(self, room_id: str, view: Mapping[str, Any]) -> None:
        meta: records.RoomMeta = view["meta"]
        livemeta: records.LiveMeta = view["livemeta"]
        current: records.JanusRecord | None = view.get("janus")
        mine = current is not None and current.janus_id == self.janus_id
        preferred = current.janus_room_id if mine and current is not None else None
        held = await self.service.ensure_audiobridge_room(room_id, pin=meta.pin, preferred_id=preferred)
        forward_to = _forward_to(view)
        if forward_to is None:
            await self.service.stop_forwarder(room_id)
        else:
            await self.service.ensure_forwarder(room_id, *forward_to)
        status = records.JanusStatus.FORWARDING if held.forwarder else records.JanusStatus.ROOM_CREATED
        desired = records.JanusRecord(
            janus_id=self.janus_id,
            janus_room_id=held.janus_room_id,
            status=status,
            # names the RTP stream the mixer receives: a rebuilt room may keep its Janus room id,
            # but its forwarder is new, and the mixer must restart FFmpeg for it
            forwarder_stream_id=held.forwarder.stream_id if held.forwarder else None,
            generation=livemeta.generation,
            updated_at=datetime.now(UTC),
        )
        if not _same(current, desired):
            fresh = await self.store.get(self._skey(room_id))
            if not (fresh is not None and _same(fresh.record, desired)):
                expect = fresh.mod_revision if fresh is not None else ABSENT
                await self.store.put(self._skey(room_id), desired, expect=expect)
        if room_id in self._restarted:
            await self._announce_restart(room_id, held.janus_room_id)

    async def _announce_restart(self, room_id: str, janus_room_id: int) -> None:
        event = records.JanusRestarted(
            room_id=room_id, janus_id=self.janus_id, janus_room_id=janus_room_id, at=datetime.now(UTC)
        )
        await self._publish(
            keys.event_subject("rooms", room_id, "janus_restarted"), records.encode_record(event)
        )
        self._restarted.discard(room_id)
        logger.info(
            "room %s: rebuilt after a Janus restart (Janus room %d); event published", room_id, janus_room_id
        )

    async def _teardown(self, room_id: str, view: Mapping[str, Any]) -> None:
        self._restarted.discard(room_id)
        await self.service.teardown_audiobridge_room(room_id)
        current: records.JanusRecord | None = view.get("janus")
        if current is None or current.janus_id != self.janus_id:
            return
        fresh = await self.store.get(self._skey(room_id))
        if fresh is not None and fresh.record.janus_id == self.janus_id:
            await self.store.delete(self._skey(room_id), expect=fresh.mod_revision)
            logger.info("room %s: janus record deleted", room_id)

    async def rebuild(self, cache: StateCache) -> None:
        """Compare Janus with etcd before the first reconcile (see RoomService.rebuild)."""
        wanted: dict[str, Wanted] = {}
        for target in cache.targets("rooms"):
            view = cache.view(target)
            if not is_assigned(view, self.janus_id):
                continue
            record: records.JanusRecord | None = view.get("janus")
            number = record.janus_room_id if record is not None and record.janus_id == self.janus_id else None
            wanted[target.id] = Wanted(janus_room_id=number, forward_to=_forward_to(view))
        await self.service.rebuild(wanted)
        ROOMS_HELD.set(len(self.service.held))
        logger.info("rebuild: %d assigned rooms, %d adopted from Janus", len(wanted), len(self.service.held))

    async def check_janus(self) -> list[str]:
        """Rooms Janus lost: forget them, reconcile them again, announce once rebuilt."""
        lost = await self.service.find_lost()
        if not lost:
            return lost
        self.restarts_detected += 1
        RESTARTS.inc()
        ROOMS_LOST.inc(len(lost))
        logger.warning("Janus lost %d rooms (restarted?): rebuilding %s", len(lost), ", ".join(sorted(lost)))
        self._restarted.update(lost)
        for room_id in lost:
            if self.enqueue is not None:
                self.enqueue(Target("rooms", room_id))
        return lost


class JanusMonitor:
    """Runs :meth:`RoomReconciler.check_janus` periodically and when woken (new session)."""

    def __init__(
        self,
        reconciler: RoomReconciler,
        *,
        interval_s: float,
        is_connected: Callable[[], bool],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._reconciler = reconciler
        self.interval_s = interval_s
        self._is_connected = is_connected
        self._wake = asyncio.Event()
        # Supervised: it used to end on the first error that was not an AppError, and then no
        # Janus restart was noticed any more while /health still said ok.
        self._task = SupervisedTask("janus-monitor", self._loop, sleep=sleep)
        self.checks = 0

    @property
    def is_running(self) -> bool:
        """The check loop runs (the ``monitor`` health check)."""
        return self._task.is_running

    @property
    def restarts(self) -> int:
        """Times the check loop died and was started again."""
        return self._task.restarts

    def wake(self) -> None:
        """Check now (the Janus client opened a new session: Janus may have restarted)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            self._wake.clear()
            if not self._is_connected():
                continue
            try:
                await self._reconciler.check_janus()
                self.checks += 1
            except AppError as exc:
                log_error(logger, exc, "Janus room check failed; the next one retries")

    async def __aenter__(self) -> JanusMonitor:
        self._task.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._task.stop()
