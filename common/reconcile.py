"""Reconcile runtime: level-triggered reconciliation on state events (docs/architecture.md, Reconciliation).

Events say *when* to look; the cache (a copy of etcd) says *what* to do. A service declares the
collections and kinds it cares about and a ``reconcile(target, view)`` coroutine; the runtime

1. creates the service instance's durable pull consumer on RTC_STATE (filtered to those
   subjects, delivering only new messages; a consumer idle past ``inactive_threshold_s`` is
   removed by the server, which is how instances that are gone get cleaned up; an existing one
   with another config is updated, or recreated when the server refuses the update),
2. then loads an etcd snapshot into the cache (consumer first, so no change falls in a gap),
3. calls the service's ``rebuild(cache)`` hook (compare with the real resources),
4. enqueues every id in the keyed scheduler, and
5. applies each event to the cache only if its modRevision is newer than what it holds
   (deletes leave tombstones, and each snapshot sets a floor per collection below which a put
   for an unknown key is ignored, so a late, older put cannot resurrect a key), acks it and
   enqueues the id. A message that cannot be decoded goes to ``rtc.dlq.<service>`` and is acked: one bad
   message never stops the consumer.

A periodic resync re-reads etcd and enqueues whatever differs; after a NATS reconnect or an
etcd outage, or once its consumer was deleted and created again, the runtime re-snapshots.
Retries of failed reconciles live in the scheduler only. The consume and resync loops run
under ``common.supervisor``: one that dies on something unexpected is started again with backoff,
and ``is_running`` (the ``reconciler`` health check) is False until it runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import attrs
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from common import keys, records
from common.backoff import Backoff
from common.bus import Bus
from common.errors import AppError, InvalidInput, Unavailable, log_error
from common.etcd import EtcdStore
from common.keys import Keyspace, StateKey
from common.pull import PullStream
from common.scheduler import KeyedScheduler
from common.supervisor import Supervisor

__all__ = [
    "Interest",
    "ReconcileFn",
    "ReconcileRuntime",
    "StateCache",
    "Target",
]

logger = logging.getLogger(__name__)

DEFAULT_RESYNC_INTERVAL_S = 30.0
DEFAULT_INACTIVE_THRESHOLD_S = 300.0
FETCH_WAIT_S = 1.0
CONSUME_RETRY_MAX_S = 2.0


@attrs.frozen
class Interest:
    """A collection a service watches, optionally only some kinds of it."""

    collection: str
    kinds: frozenset[str] | None = None

    def wants(self, skey: StateKey) -> bool:
        return skey.collection == self.collection and (self.kinds is None or skey.kind in self.kinds)

    def filter_subjects(self) -> list[str]:
        if self.kinds is None:
            return [keys.state_filter(self.collection)]
        return [keys.state_filter(self.collection, kind) for kind in sorted(self.kinds)]


@attrs.frozen(order=True)
class Target:
    """What one reconcile run is about: a room, a mixer, a janus."""

    collection: str
    id: str

    def __str__(self) -> str:
        return f"{self.collection}/{self.id}"

    @classmethod
    def parse(cls, text: str) -> Target:
        collection, _, id_ = text.partition("/")
        return cls(collection, id_)


@attrs.frozen
class Entry:
    record: Any
    mod_revision: int


class StateCache:
    """key -> (record, modRevision), grouped by target; only ever moves forward in revisions.

    Two things keep an older put from bringing back a key that etcd has deleted:

    - a tombstone per key deleted since the last snapshot (its delete revision);
    - a *floor* per collection: the revision of the last snapshot of that key range. The
      snapshot reflects every change up to it, so a key it did not contain was absent at that
      revision; a put at or below the floor for a key the cache does not hold is a replay (a
      relay re-publishing, a redelivery) of a write that was deleted since, and is ignored.
      The floor is what lets a snapshot drop the tombstones below it without risk.
    """

    def __init__(self) -> None:
        self._by_target: dict[Target, dict[str, Entry]] = {}
        self._tombstones: dict[StateKey, int] = {}
        self._floors: dict[str, int] = {}

    def floor(self, collection: str) -> int:
        """The revision of the last snapshot of ``collection`` (0 before the first)."""
        return self._floors.get(collection, 0)

    def apply_put(self, skey: StateKey, record: Any, mod_revision: int) -> bool:
        """Store ``record`` unless the cache already holds this key at a newer revision, or the
        key is unknown and the put is not newer than the collection's snapshot."""
        if self._tombstones.get(skey, 0) >= mod_revision:
            return False
        kinds = self._by_target.setdefault(Target(skey.collection, skey.id), {})
        current = kinds.get(skey.kind)
        if current is None and mod_revision <= self._floors.get(skey.collection, 0):
            if not kinds:
                del self._by_target[Target(skey.collection, skey.id)]
            return False
        if current is not None and current.mod_revision >= mod_revision:
            return False
        kinds[skey.kind] = Entry(record, mod_revision)
        self._tombstones.pop(skey, None)
        return True

    def apply_delete(self, skey: StateKey, mod_revision: int) -> bool:
        """Drop the key if the delete is newer than what the cache holds."""
        target = Target(skey.collection, skey.id)
        kinds = self._by_target.get(target)
        current = kinds.get(skey.kind) if kinds else None
        if current is not None and current.mod_revision >= mod_revision:
            return False
        if current is not None or mod_revision > self._floors.get(skey.collection, 0):
            # At or below the floor an unknown key needs no tombstone: the floor covers it.
            self._tombstones[skey] = max(mod_revision, self._tombstones.get(skey, 0))
        if current is None or kinds is None:
            return False
        del kinds[skey.kind]
        if not kinds:
            del self._by_target[target]
        return True

    def set_floor(self, collection: str, revision: int) -> None:
        """``collection`` was just loaded from a snapshot at ``revision``: raise its floor (it never
        goes down) and drop the tombstones it now covers."""
        if revision <= self._floors.get(collection, 0):
            return
        self._floors[collection] = revision
        self._tombstones = {
            k: r for k, r in self._tombstones.items() if k.collection != collection or r > revision
        }

    def get(self, collection: str, id_: str, kind: str) -> Any | None:
        entry = self._by_target.get(Target(collection, id_), {}).get(kind)
        return entry.record if entry else None

    def entry(self, skey: StateKey) -> Entry | None:
        return self._by_target.get(Target(skey.collection, skey.id), {}).get(skey.kind)

    def view(self, target: Target) -> Mapping[str, Any]:
        """kind -> record for one target (empty when nothing is left of it)."""
        return {kind: e.record for kind, e in self._by_target.get(target, {}).items()}

    def targets(self, collection: str | None = None) -> list[Target]:
        return sorted(t for t in self._by_target if collection is None or t.collection == collection)

    def items(self, collection: str, kind: str) -> Iterator[tuple[str, Any]]:
        """(id, record) of every cached key of that collection and kind."""
        for target, kinds in self._by_target.items():
            if target.collection == collection and kind in kinds:
                yield target.id, kinds[kind].record

    def entries(self) -> Iterator[tuple[StateKey, Entry]]:
        for target, kinds in self._by_target.items():
            for kind, entry in kinds.items():
                yield StateKey(target.collection, target.id, kind), entry

    def __len__(self) -> int:
        return sum(len(k) for k in self._by_target.values())


def _config_changes(have: ConsumerConfig, want: ConsumerConfig) -> list[str]:
    """What differs between the server's consumer config and ours, as ``field old -> new``."""

    def subjects(config: ConsumerConfig) -> list[str]:
        if config.filter_subjects:
            return sorted(config.filter_subjects)
        return [config.filter_subject] if config.filter_subject else []

    changes: list[str] = []
    if subjects(have) != subjects(want):
        changes.append(f"filter_subjects {subjects(have)} -> {subjects(want)}")
    for field in ("description", "deliver_policy", "ack_policy", "max_ack_pending"):
        old, new = getattr(have, field), getattr(want, field)
        if old != new:  # the policies are str enums: "all" == DeliverPolicy.ALL
            changes.append(f"{field} {getattr(old, 'value', old)} -> {getattr(new, 'value', new)}")
    for field in ("ack_wait", "inactive_threshold"):  # seconds, from nanoseconds on the wire
        old, new = getattr(have, field), getattr(want, field)
        if (old is None or new is None or abs(old - new) > 0.001) and old != new:
            changes.append(f"{field} {old} -> {new}")
    return changes


ReconcileFn = Callable[[Target, Mapping[str, Any]], Awaitable[None]]
RebuildFn = Callable[[StateCache], Awaitable[None]]


@attrs.define
class RuntimeStats:
    events_applied: int = 0
    events_stale: int = 0
    dead_letters: int = 0
    resync_changes: int = 0


class ReconcileRuntime:
    """Drive ``reconcile`` from the state events of the chosen collections; see the module doc."""

    def __init__(
        self,
        *,
        service: str,
        instance: str,
        etcd: EtcdStore,
        bus: Bus,
        keyspace: Keyspace,
        interests: list[Interest],
        reconcile: ReconcileFn,
        rebuild: RebuildFn | None = None,
        resync_interval_s: float = DEFAULT_RESYNC_INTERVAL_S,
        inactive_threshold_s: float = DEFAULT_INACTIVE_THRESHOLD_S,
    ) -> None:
        self.service = service
        self.instance = instance
        self.etcd = etcd
        self.bus = bus
        self.keyspace = keyspace
        self.interests = interests
        self._reconcile = reconcile
        self._rebuild = rebuild
        self.resync_interval_s = resync_interval_s
        self.inactive_threshold_s = inactive_threshold_s
        self.cache = StateCache()
        self.stats = RuntimeStats()
        self.scheduler = KeyedScheduler(self._run_target, name=service)
        # The consume and resync loops: restarted if anything unexpected ends them.
        self._loops = Supervisor()
        self._consume_runs = 0
        self._resnapshot = asyncio.Event()
        self._is_ready = asyncio.Event()
        self._is_started = False
        self._is_stopping = asyncio.Event()

    @property
    def durable_name(self) -> str:
        return f"{self.service}-{self.instance}"

    @property
    def is_ready(self) -> bool:
        """Start-up finished (consumer, snapshot, rebuild)."""
        return self._is_ready.is_set()

    @property
    def is_running(self) -> bool:
        """Ready, and the consume and resync loops run now: the ``reconciler`` health check.

        False while a loop that died waits for its restart (an outage the loop handles itself,
        NATS down say, keeps it running: the ``nats`` check reports that).
        """
        return self.is_ready and self._is_started and self._loops.is_running

    def wants(self, skey: StateKey) -> bool:
        return any(i.wants(skey) for i in self.interests)

    def enqueue(self, target: Target, delay_s: float = 0.0) -> None:
        """Ask for a reconcile of ``target`` (services call this for their own timers too)."""
        self.scheduler.enqueue(str(target), delay_s)

    async def _run_target(self, key: str) -> None:
        target = Target.parse(key)
        await self._reconcile(target, self.cache.view(target))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Consumer, snapshot, rebuild, enqueue all; then follow events. Returns when ready."""
        if self._is_started:
            return
        self._is_started = True
        await self._ensure_consumer()
        await self._load_snapshot(initial=True)
        if self._rebuild is not None:
            await self._rebuild(self.cache)
        await self.scheduler.start()
        for target in self.cache.targets():
            self.enqueue(target)
        self.bus.on_reconnect(self._resnapshot.set)
        self._loops.spawn(f"{self.durable_name}-consume", self._consume)
        self._loops.spawn(f"{self.durable_name}-resync", self._resync_loop)
        self._is_ready.set()

    async def stop(self) -> None:
        """Stop taking events, let running reconciles finish, drop the subscription."""
        if not self._is_started:
            return
        self._is_started = False
        # The flag first: a consume loop whose cancel was swallowed (asyncio.wait_for on 3.11)
        # still ends on it.
        self._is_stopping.set()
        await self._loops.aclose()
        await self.scheduler.close()

    async def __aenter__(self) -> ReconcileRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- consumer ----------------------------------------------------------------------------

    def _consumer_config(self) -> ConsumerConfig:
        subjects = [s for i in self.interests for s in i.filter_subjects()]
        return ConsumerConfig(
            durable_name=self.durable_name,
            description=f"reconcile runtime of {self.service} instance {self.instance}",
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30,
            max_ack_pending=20_000,
            inactive_threshold=self.inactive_threshold_s,
            filter_subjects=subjects,
        )

    async def _ensure_consumer(self) -> bool:
        """Create the consumer, or bring an existing one to the config this instance asks for.

        An existing consumer with the same config keeps its position (events since our last run
        wait there). One that differs (an older version of the service watched other subjects)
        is updated in place; what the server cannot update (deliver or ack policy) is deleted
        and created again. Either way the snapshot that follows covers whatever it skipped: True
        when the consumer is new or changed, so the caller must (re-)snapshot.
        """
        config = self._consumer_config()
        try:
            async with asyncio.timeout(self.bus.request_timeout_s):
                try:
                    info = await self.bus.js.consumer_info(keys.STATE_STREAM, self.durable_name)
                except nats.js.errors.NotFoundError:
                    await self.bus.js.add_consumer(keys.STATE_STREAM, config)
                    logger.info("created consumer %s on %s", self.durable_name, keys.STATE_STREAM)
                    return True
                changes = _config_changes(info.config, config)
                if not changes:
                    return False
                try:
                    await self.bus.js.add_consumer(keys.STATE_STREAM, config)
                    logger.info("updated consumer %s: %s", self.durable_name, "; ".join(changes))
                except nats.js.errors.APIError as exc:
                    logger.info(
                        "consumer %s cannot be updated (%s); recreating it: %s",
                        self.durable_name,
                        exc.description,
                        "; ".join(changes),
                    )
                    with contextlib.suppress(nats.js.errors.NotFoundError):
                        await self.bus.js.delete_consumer(keys.STATE_STREAM, self.durable_name)
                    await self.bus.js.add_consumer(keys.STATE_STREAM, config)
                return True
        except Exception as exc:
            raise Unavailable(f"cannot create consumer {self.durable_name}: {exc}") from exc

    async def _consume(self) -> None:
        pull: PullStream | None = None
        # A consumer that cannot pull misses nothing (the re-snapshot covers it) but delays every
        # event, so the wait between tries is capped low; the jitter spreads instances that lost
        # the same server.
        backoff = Backoff(max_s=CONSUME_RETRY_MAX_S, jitter=0.5)
        self._consume_runs += 1
        if self._consume_runs > 1:
            # Restarted by the supervisor: the message in hand when the loop died is unacked
            # and comes back only after ack_wait; the snapshot brings its change in now.
            self._resnapshot.set()
        try:
            while not self._is_stopping.is_set():
                try:
                    if pull is None:
                        # A consumer created now starts at the stream's end: whatever changed
                        # since the last snapshot is only in etcd.
                        if await self._ensure_consumer():
                            self._resnapshot.set()
                        pull = PullStream(self.bus, stream=keys.STATE_STREAM, durable=self.durable_name)
                        await pull.start()
                    if self._resnapshot.is_set():
                        self._resnapshot.clear()
                        await self._ensure_consumer()
                        await self._load_snapshot(initial=False)
                        backoff.reset()
                    msg = await pull.next(FETCH_WAIT_S)
                    if msg is not None:
                        await self._handle(msg)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log_error(logger, exc, f"consumer {self.durable_name} interrupted; re-snapshotting")
                    if pull is not None:
                        await pull.stop()
                        pull = None
                    self._resnapshot.set()
                    await asyncio.sleep(backoff.next())
        finally:
            if pull is not None:
                await pull.stop()

    async def _handle(self, msg: Msg) -> None:
        try:
            skey = keys.parse_state_subject(msg.subject)
            if skey is None:
                raise InvalidInput("subject is not a state subject", subject=msg.subject)
            event = records.decode_event(msg.data)
            if self.keyspace.parse(event.key) != skey:
                raise InvalidInput("event key does not match its subject", key=event.key, subject=msg.subject)
            if event.op == records.StateOp.PUT:
                record = records.decode_record(skey.kind, event.value, key=event.key)
                changed = self.cache.apply_put(skey, record, event.mod_revision)
            else:
                changed = self.cache.apply_delete(skey, event.mod_revision)
        except InvalidInput as exc:
            await self._dead_letter(msg, exc)
            await msg.ack()
            return
        if changed:
            self.stats.events_applied += 1
            self.enqueue(Target(skey.collection, skey.id))
        await msg.ack()
        if not changed:
            self.stats.events_stale += 1
            logger.debug("stale event %s@%d ignored", event.key, event.mod_revision)

    async def _dead_letter(self, msg: Msg, exc: AppError) -> None:
        self.stats.dead_letters += 1
        seq = msg.metadata.sequence.stream if msg.reply else 0
        log_error(
            logger,
            exc,
            "malformed state message sent to the dead-letter subject",
            subject=msg.subject,
            sequence=seq,
        )
        letter = records.DeadLetter.build(
            service=self.service, subject=msg.subject, sequence=seq, error=str(exc), data=msg.data
        )
        try:
            await self.bus.publish(keys.dlq_subject(self.service), records.encode_record(letter))
        except AppError as pub_exc:
            log_error(logger, pub_exc, "dead letter not published", subject=msg.subject, sequence=seq)

    # -- snapshot and resync ------------------------------------------------------------------

    async def _load_snapshot(self, *, initial: bool) -> None:
        """Bring the cache to etcd's state; after the first time, enqueue the targets that changed."""
        changed: set[Target] = set()
        seen: set[StateKey] = set()
        for collection in sorted({i.collection for i in self.interests}):
            snap = await self.etcd.get_prefix(self.keyspace.prefix(collection))
            for kv in snap.kvs:
                skey = self.keyspace.parse(kv.key)
                if skey is None or not self.wants(skey):
                    continue
                try:
                    record = records.decode_record(skey.kind, kv.value, key=kv.key)
                except InvalidInput as exc:
                    log_error(logger, exc, "skipping an undecodable etcd value", key=kv.key)
                    continue
                seen.add(skey)
                if self.cache.apply_put(skey, record, kv.mod_revision):
                    changed.add(Target(skey.collection, skey.id))
            # Keys the cache holds but etcd no longer has were deleted while we were not looking.
            for skey, entry in list(self.cache.entries()):
                if (
                    skey.collection == collection
                    and skey not in seen
                    and entry.mod_revision <= snap.revision
                    and self.cache.apply_delete(skey, snap.revision)
                ):
                    changed.add(Target(skey.collection, skey.id))
            # Only after the snapshot's own puts went in: they are all at or below its revision.
            self.cache.set_floor(collection, snap.revision)
        if not initial:
            self.stats.resync_changes += len(changed)
            for target in changed:
                self.enqueue(target)
            if changed:
                logger.info("resync found %d changed targets", len(changed))

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resync_interval_s)
            try:
                await self._load_snapshot(initial=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_error(logger, exc, "periodic resync failed; next one will retry")
