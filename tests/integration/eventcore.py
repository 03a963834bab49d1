"""Helpers shared by the event-core, contract and service tests (plain functions, no fixtures)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg

from common import records
from common.bus import Bus
from common.contracts import validate_payload
from common.etcd import EtcdStore
from common.keys import Keyspace
from common.reconcile import Interest, ReconcileFn, ReconcileRuntime, Target

__all__ = [
    "cache_state",
    "captured",
    "etcd_state",
    "eventually",
    "noop_reconcile",
    "room_meta",
    "state_consumer",
    "validated_puts",
]


async def noop_reconcile(_target: Target, _view: Mapping[str, Any]) -> None:
    """A consumer that only keeps its cache (what a contract test checks)."""
    return None


def state_consumer(
    etcd: EtcdStore,
    bus: Bus,
    keyspace: Keyspace,
    *,
    collection: str,
    kinds: frozenset[str] | None = None,
    service: str,
    instance: str,
    reconcile: ReconcileFn = noop_reconcile,
) -> ReconcileRuntime:
    """A real consumer of one collection, as the named service runs it."""
    return ReconcileRuntime(
        service=service,
        instance=instance,
        etcd=etcd,
        bus=bus,
        keyspace=keyspace,
        interests=[Interest(collection, kinds)],
        reconcile=reconcile,
    )


@contextlib.asynccontextmanager
async def captured(bus: Bus, subject: str, *, stream: str | None = None) -> AsyncIterator[list[Msg]]:
    """Every message on ``subject`` while the block runs (from ``stream`` if given, else core NATS)."""
    got: list[Msg] = []

    async def collect(msg: Msg) -> None:
        got.append(msg)

    if stream is None:
        sub = await bus.nc.subscribe(subject, cb=collect)
    else:
        sub = await bus.js.subscribe(subject, cb=collect, stream=stream)
    try:
        yield got
    finally:
        await sub.unsubscribe()


def validated_puts(msgs: list[Msg], kind: str) -> list[Any]:
    """Validate every state message against its contract; the records of the puts, in order."""
    out = []
    for msg in msgs:
        validate_payload(msg.subject, msg.data)
        event = records.decode_event(msg.data, subject=msg.subject)
        if event.op is records.StateOp.PUT:
            out.append(records.decode_record(kind, event.value, key=event.key))
    return out


def room_meta(room_id: str, max_anchors: int = 3) -> records.RoomMeta:
    return records.RoomMeta(
        pin="",
        max_anchors=max_anchors,
        hls_path=f"{room_id}/stream.m3u8",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


async def etcd_state(etcd: EtcdStore, keyspace: Keyspace, collection: str = "rooms") -> dict[str, int]:
    """key -> mod_revision of every state key of ``collection`` in etcd now."""
    snap = await etcd.get_prefix(keyspace.prefix(collection))
    return {kv.key: kv.mod_revision for kv in snap.kvs if keyspace.parse(kv.key) is not None}


def cache_state(runtime: ReconcileRuntime, keyspace: Keyspace, collection: str = "rooms") -> dict[str, int]:
    return {
        keyspace.key(skey.collection, skey.id, skey.kind): entry.mod_revision
        for skey, entry in runtime.cache.entries()
        if skey.collection == collection
    }


async def eventually(check: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll an (async or sync) check until it is truthy; fail naming ``what``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: object = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not true after {timeout_s} s (last: {last!r})")
        await asyncio.sleep(0.05)
