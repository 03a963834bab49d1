"""The resource manager: which module a room goes to, and a free slot on it.

Candidates come from the state cache (heartbeats, marks and livemetas, kept current by the
reconcile runtime): healthy, labelled ready or unlabelled, capacity > 0, fewer assigned rooms
than capacity. One is chosen uniformly at random; its slots are then read from etcd, which is
the authority (the cache may lag by a few milliseconds), and a free slot index is chosen. The
caller creates that slot in the transaction that assigns the room (roomstore.py), so a slot
taken meanwhile makes the transaction fail and the caller picks again.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Collection as AbstractCollection

from common.keys import Collection
from svc_rooms.modules import ModuleState, RecordSource, module_states
from svc_rooms.roomstore import RoomStore, Slot

__all__ = ["ResourceManager"]

logger = logging.getLogger(__name__)


class ResourceManager:
    """Pick modules for rooms from ``source`` (the runtime's cache) and slots from etcd."""

    def __init__(self, source: RecordSource, store: RoomStore, *, rng: random.Random | None = None) -> None:
        self.source = source
        self.store = store
        self._rng = rng or random.Random()

    def modules(self, collection: Collection | None = None) -> list[ModuleState]:
        return module_states(self.source, collection)

    def module(self, collection: Collection, module_id: str) -> ModuleState | None:
        for state in self.modules(collection):
            if state.id == module_id:
                return state
        return None

    def candidates(self, collection: Collection, exclude: AbstractCollection[str] = ()) -> list[ModuleState]:
        return [m for m in self.modules(collection) if m.is_pickable and m.id not in exclude]

    async def pick_slot(self, collection: Collection, exclude: AbstractCollection[str] = ()) -> Slot | None:
        """A free slot on a random pickable module, or None if no module has room.

        A module the cache thinks has room but etcd shows full is skipped for this pick.
        """
        candidates = self.candidates(collection, exclude)
        self._rng.shuffle(candidates)
        for module in candidates:
            taken = await self.store.read_slots(collection, module.id)
            free = [i for i in range(module.capacity) if i not in taken]
            if free:
                return self.store.slot(collection, module.id, self._rng.choice(free))
            logger.debug(
                "%s %s is full in etcd (cache said %d/%d)",
                collection,
                module.id,
                module.assigned,
                module.capacity,
            )
        return None
