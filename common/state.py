"""The state store: every write is an etcd transaction, then a state event on NATS.

The publish right after the commit gives consumers low latency; if this process dies between
the two, or NATS is briefly away, the state relay publishes the same event later under the same
message id (``<key>@<revision>``), so JetStream keeps exactly one. A failed publish therefore
never fails the write: the etcd commit is what counts.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

from common import keys, records
from common.bus import Bus
from common.errors import AppError
from common.etcd import EtcdStore
from common.keys import Keyspace, StateKey

__all__ = ["ABSENT", "StateStore", "Versioned", "state_event_message"]

logger = logging.getLogger(__name__)


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()
"""``expect=ABSENT``: the write succeeds only if the key does not exist (create)."""


@attrs.frozen(kw_only=True)
class Versioned:
    """A decoded record with the etcd revision it was last changed at."""

    key: StateKey
    record: Any
    mod_revision: int
    lease: int = 0


def state_event_message(
    keyspace: Keyspace, skey: StateKey, *, op: records.StateOp, revision: int, value: Any | None
) -> tuple[str, bytes, str]:
    """(subject, payload, msg id) of the state event for one etcd change."""
    key = keyspace.state_key_of(skey)
    event = records.StateEvent(key=key, op=op, revision=revision, mod_revision=revision, value=value)
    return keys.state_subject(skey), records.encode_record(event), keys.msg_id(key, revision)


class StateStore:
    """Typed reads and writes of the etcd state, each write followed by its state event."""

    def __init__(self, etcd: EtcdStore, bus: Bus | None, keyspace: Keyspace) -> None:
        self.etcd = etcd
        self.bus = bus
        self.keyspace = keyspace

    def key(self, skey: StateKey) -> str:
        return self.keyspace.state_key_of(skey)

    async def get(self, skey: StateKey) -> Versioned | None:
        kv = await self.etcd.get(self.key(skey))
        if kv is None:
            return None
        record = records.decode_record(skey.kind, kv.value, key=kv.key)
        return Versioned(key=skey, record=record, mod_revision=kv.mod_revision, lease=kv.lease or 0)

    async def put(
        self,
        skey: StateKey,
        record: Any,
        *,
        lease: int | None = None,
        expect: int | _Absent | None = None,
    ) -> int:
        """Write ``record``; ``expect`` = None (unconditional), ABSENT (create) or a mod_revision.

        Raises ``Conflict`` when the expectation does not hold. Returns the new revision.
        """
        key = self.key(skey)
        raw = records.encode_record(record)
        if expect is None:
            revision = await self.etcd.put(key, raw, lease=lease)
        elif isinstance(expect, _Absent):
            revision = await self.etcd.create(key, raw, lease=lease)
        else:
            revision = await self.etcd.replace(key, raw, mod_revision=expect, lease=lease)
        await self._publish(skey, records.StateOp.PUT, revision, records.unstructure(record))
        return revision

    async def delete(self, skey: StateKey, *, expect: int | None = None) -> int | None:
        """Delete the key (only at ``expect`` mod_revision if given). None if nothing was there."""
        key = self.key(skey)
        if expect is None:
            revision = await self.etcd.delete(key)
        else:
            revision = await self.etcd.delete_if(key, mod_revision=expect)
        if revision is not None:
            await self._publish(skey, records.StateOp.DELETE, revision, None)
        return revision

    async def _publish(self, skey: StateKey, op: records.StateOp, revision: int, value: Any) -> None:
        if self.bus is None:
            return
        subject, payload, msg_id = state_event_message(
            self.keyspace, skey, op=op, revision=revision, value=value
        )
        try:
            await self.bus.publish(subject, payload, msg_id=msg_id)
        except AppError as exc:
            # The commit stands; the relay will publish this change under the same id.
            logger.warning("state event %s not published now (%s); the relay will", msg_id, exc)
