"""Helpers shared by the event-core integration tests (not fixtures: plain functions)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from common import records
from common.etcd import EtcdStore
from common.keys import Keyspace
from common.reconcile import ReconcileRuntime

__all__ = ["cache_state", "etcd_state", "eventually", "room_meta"]


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
