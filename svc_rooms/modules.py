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

Pure functions over plain records: no I/O here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import attrs

from common.keys import Collection, Kind
from common.records import Heartbeat, LiveMeta, LiveStatus, Mark, MarkLabel, MigrationReason, ModuleStatus

__all__ = [
    "MODULE_COLLECTIONS",
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
