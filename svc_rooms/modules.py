"""The resource manager's view of the Janus and mixer modules, computed from the state cache.

A module is what its heartbeat (on a lease: gone when the module dies), its mark (the
operator's label) and the livemetas assigned to it say. The rules (from the reference system, fixed,
and extended for room migration: docs/architecture.md, Services):

- *healthy*: a heartbeat with status ``healthy``;
- *pickable*: healthy, label ``ready`` or none, capacity > 0 and fewer assigned rooms than
  capacity: new rooms may go there;
- *evacuate*: rooms on it must move (room migration): no heartbeat (lease expired), status
  ``unhealthy``, or label ``draining`` / ``drained`` / ``unready``. ``cordon`` keeps its rooms
  but takes no new ones;
- the label shown is ``drained`` for a ``draining`` module that has no rooms left.

A missing heartbeat alone does not move rooms at once: ``Absences`` gives the module a grace
period (``MODULE_GRACE_PERIOD``) counted from the moment this process first saw the heartbeat
gone, so a module process that restarts (SIGTERM revokes its lease, kill -9 lets it expire)
comes back to its rooms where they are. A mark that evacuates has no grace: it is deliberate.

Pure functions and plain state over records and times passed in: no I/O here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

import attrs

from common.keys import Collection, Kind
from common.records import Heartbeat, LiveMeta, LiveStatus, Mark, MarkLabel, MigrationReason, ModuleStatus

__all__ = [
    "MODULE_COLLECTIONS",
    "Absences",
    "ModuleState",
    "RecordSource",
    "assigned_counts",
    "module_state",
    "module_states",
]

MODULE_COLLECTIONS = (Collection.JANUSES, Collection.MIXERS)

_PICKABLE_LABELS = frozenset({None, MarkLabel.READY})
_EVACUATE_LABELS = frozenset({MarkLabel.DRAINING, MarkLabel.DRAINED, MarkLabel.UNREADY})


class RecordSource(Protocol):
    """What the view reads: ``common.reconcile.StateCache`` fits (``get`` and ``items``)."""

    def get(self, collection: str, id_: str, kind: str) -> Any | None: ...

    def items(self, collection: str, kind: str) -> Iterable[tuple[str, Any]]: ...


@attrs.frozen(kw_only=True)
class ModuleState:
    """One module as the resource manager sees it."""

    collection: Collection
    id: str
    heartbeat: Heartbeat | None
    mark: Mark | None
    assigned: int

    @property
    def label(self) -> MarkLabel | None:
        return self.mark.label if self.mark is not None else None

    @property
    def shown_label(self) -> MarkLabel | None:
        if self.label is MarkLabel.DRAINING and self.assigned == 0:
            return MarkLabel.DRAINED
        return self.label

    @property
    def capacity(self) -> int:
        return self.heartbeat.capacity if self.heartbeat is not None else 0

    @property
    def is_healthy(self) -> bool:
        return self.heartbeat is not None and self.heartbeat.status is ModuleStatus.HEALTHY

    @property
    def is_pickable(self) -> bool:
        return (
            self.is_healthy
            and self.label in _PICKABLE_LABELS
            and self.capacity > 0
            and self.assigned < self.capacity
        )

    @property
    def is_marked_away(self) -> bool:
        """An operator's mark says its rooms must leave (on purpose: no grace)."""
        return self.label in _EVACUATE_LABELS

    @property
    def evacuate_reason(self) -> MigrationReason | None:
        """Why rooms must leave this module, or None when they may stay."""
        if self.heartbeat is None:
            return MigrationReason.LEASE_EXPIRED
        if self.heartbeat.status is not ModuleStatus.HEALTHY:
            return MigrationReason.UNREADY
        if self.label in _EVACUATE_LABELS:
            return MigrationReason.UNREADY if self.label is MarkLabel.UNREADY else MigrationReason.DRAINING
        return None


def assigned_counts(source: RecordSource) -> Counter[tuple[str, str]]:
    """(collection, module id) -> number of onair rooms assigned to it."""
    counts: Counter[tuple[str, str]] = Counter()
    for _room_id, live in source.items(Collection.ROOMS, Kind.LIVEMETA):
        if isinstance(live, LiveMeta) and live.status is LiveStatus.ONAIR:
            counts[(Collection.JANUSES, live.janus_id)] += 1
            counts[(Collection.MIXERS, live.mixer_id)] += 1
    return counts


def module_state(
    source: RecordSource, collection: Collection, module_id: str, counts: Mapping[tuple[str, str], int]
) -> ModuleState:
    return ModuleState(
        collection=collection,
        id=module_id,
        heartbeat=source.get(collection, module_id, Kind.HEARTBEAT),
        mark=source.get(collection, module_id, Kind.MARK),
        assigned=counts.get((collection, module_id), 0),
    )


def module_states(source: RecordSource, collection: Collection | None = None) -> list[ModuleState]:
    """Every module known by a heartbeat, a mark or an assigned room, sorted by (collection, id)."""
    counts = assigned_counts(source)
    ids: set[tuple[Collection, str]] = set()
    for c in MODULE_COLLECTIONS if collection is None else (collection,):
        for kind in (Kind.HEARTBEAT, Kind.MARK):
            ids.update((c, module_id) for module_id, _ in source.items(c, kind))
        ids.update((c, module_id) for (cc, module_id) in counts if cc == c)
    return [module_state(source, c, module_id, counts) for c, module_id in sorted(ids)]


class Absences:
    """When each module's heartbeat was first seen missing, and how much of its grace is left.

    The time etcd deleted a heartbeat is not in etcd (a lease expiry is just a delete), so the
    grace counts from the first time this process *saw* it missing: the delete event in the
    cache, or, after a restart of svc_rooms, the first look at a module that was already gone.
    That errs on the safe side: a restart of svc_rooms never cuts a module's grace short (it can
    only lengthen it, by up to one grace). A kill -9 is seen when the lease expires (up to the
    module's ``LEASE_TTL`` after the death), so its rooms move up to TTL + grace after it.
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._since: dict[tuple[str, str], datetime] = {}

    def grace_left_s(self, collection: str, module_id: str, *, present: bool, now: datetime) -> float:
        """Seconds before a module whose heartbeat is gone loses its rooms; 0 when over.

        ``present`` = its heartbeat is there: the absence is forgotten (a module that comes back
        and then goes again gets a whole new grace) and the answer is 0 (nothing to wait for).
        """
        key = (str(collection), module_id)
        if present:
            self._since.pop(key, None)
            return 0.0
        since = self._since.setdefault(key, now)
        return max(0.0, self.grace_s - (now - since).total_seconds())

    def missing_since(self, collection: str, module_id: str) -> datetime | None:
        return self._since.get((str(collection), module_id))

    def forget(self, collection: str, module_id: str) -> None:
        """The module has nothing left to wait for (no rooms): drop its entry."""
        self._since.pop((str(collection), module_id), None)
