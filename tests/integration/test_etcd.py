"""EtcdStore against a real etcd: kv, transactions, watches, compaction, leases, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from common.errors import Conflict, DependencyTimeout, InvalidInput, Unavailable
from common.etcd import (
    KV,
    Compacted,
    Compare,
    DeleteOp,
    EtcdStore,
    LeaseLost,
    PutOp,
    WatchEvent,
    _client_target,
    _range_end,
)
from tests.servers import EtcdServer, free_port

WAIT_S = 10.0


@pytest.fixture
async def store(etcd_server: EtcdServer) -> AsyncIterator[EtcdStore]:
    async with EtcdStore.open([etcd_server.endpoint], request_timeout_s=3.0) as s:
        yield s


@pytest.fixture
def prefix() -> str:
    return f"/t-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    srv = EtcdServer(tmp_path / "etcd")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


class Collector:
    """Consumes a watch iterator in a task owned by the test; events land in ``events``."""

    def __init__(self, it: AsyncIterator[WatchEvent]) -> None:
        self.events: list[WatchEvent] = []
        self._it = it
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for ev in self._it:
            self.events.append(ev)

    async def wait_for(self, n: int, timeout_s: float = WAIT_S) -> list[WatchEvent]:
        async with asyncio.timeout(timeout_s):
            while len(self.events) < n:
                if self.task.done():
                    self.task.result()
                    raise AssertionError(f"watch ended after {len(self.events)} events")
                await asyncio.sleep(0.01)
        return self.events

    async def aclose(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


# -- pure helpers -------------------------------------------------------------------------------


def test_range_end() -> None:
    assert _range_end(b"/rooms/") == b"/rooms0"
    assert _range_end(b"a\xff") == b"b"
    assert _range_end(b"") == b"\0"


def test_client_target() -> None:
    assert _client_target(["127.0.0.1:2379"]) == ("127.0.0.1", 2379)
    assert _client_target(["http://localhost:2379/"]) == ("localhost", 2379)
    host, port = _client_target(["10.0.0.1:2379", "10.0.0.2:2380"])
    assert f"{host}:{port}" == "ipv4:10.0.0.1:2379,10.0.0.2:2380"
    with pytest.raises(InvalidInput):
        _client_target(["etcd-a:2379", "etcd-b:2379"])
    with pytest.raises(InvalidInput):
        _client_target(["no-port"])
    with pytest.raises(InvalidInput):
        _client_target([])


# -- key/value ----------------------------------------------------------------------------------


async def test_put_get_delete(store: EtcdStore, prefix: str) -> None:
    key = prefix + "a"
    assert await store.get(key) is None
    rev1 = await store.put(key, b"one")
    kv = await store.get(key)
    assert kv == KV(key=key, value=b"one", create_revision=rev1, mod_revision=rev1, version=1, lease=0)
    rev2 = await store.put(key, b"two")
    assert rev2 > rev1
    kv = await store.get(key)
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"two", rev1, rev2, 2)
    rev3 = await store.delete(key)
    assert rev3 is not None
    assert rev3 > rev2
    assert await store.get(key) is None
    assert await store.delete(key) is None


async def test_get_prefix_revision_and_prefix_delete(store: EtcdStore, prefix: str) -> None:
    revs = [await store.put(prefix + k, k.encode()) for k in ("b", "a", "c/x")]
    await store.put(prefix.rstrip("/") + "0", b"outside")  # just past the prefix range
    snap = await store.get_prefix(prefix)
    assert [kv.key for kv in snap.kvs] == [prefix + "a", prefix + "b", prefix + "c/x"]
    assert snap.revision >= max(revs) + 1  # the read saw the later outside write too
    ok, _ = await store.txn([], [DeleteOp(key=prefix, prefix=True)])
    assert ok
    assert (await store.get_prefix(prefix)).kvs == []
    assert await store.delete(prefix.rstrip("/") + "0") is not None
    with pytest.raises(InvalidInput):
        await store.txn([], [DeleteOp(key="", prefix=True)])


async def test_utf8_keys(store: EtcdStore, prefix: str) -> None:
    key = prefix + "zürich"
    await store.put(key, b"\x00\xff")
    kv = await store.get(key)
    assert kv is not None
    assert (kv.key, kv.value) == (key, b"\x00\xff")


# -- transactions -------------------------------------------------------------------------------


async def test_create_conflicts_when_present(store: EtcdStore, prefix: str) -> None:
    key = prefix + "c"
    rev = await store.create(key, b"1")
    with pytest.raises(Conflict) as info:
        await store.create(key, b"2")
    assert info.value.fields["key"] == key
    kv = await store.get(key)
    assert kv is not None
    assert (kv.value, kv.mod_revision) == (b"1", rev)


async def test_replace_and_delete_if_compare_mod_revision(store: EtcdStore, prefix: str) -> None:
    key = prefix + "r"
    rev1 = await store.create(key, b"1")
    rev2 = await store.replace(key, b"2", mod_revision=rev1)
    with pytest.raises(Conflict):
        await store.replace(key, b"stale", mod_revision=rev1)
    with pytest.raises(Conflict):
        await store.delete_if(key, mod_revision=rev1)
    kv = await store.get(key)
    assert kv is not None
    assert (kv.value, kv.mod_revision) == (b"2", rev2)
    rev3 = await store.delete_if(key, mod_revision=rev2)
    assert rev3 > rev2
    assert await store.get(key) is None
    with pytest.raises(Conflict):  # absent: mod_revision 0 never matches
        await store.delete_if(key, mod_revision=rev2)


async def test_txn_is_all_or_nothing_and_reports_revision(store: EtcdStore, prefix: str) -> None:
    a, b = prefix + "a", prefix + "b"
    rev_a = await store.put(a, b"x")
    ops = [PutOp(key=b, value=b"success"), DeleteOp(key=a)]
    ok, rev = await store.txn([Compare.absent(a)], ops)
    assert not ok
    assert rev >= rev_a
    assert await store.get(b) is None
    kv = await store.get(a)
    assert kv is not None
    assert kv.mod_revision == rev_a
    ok, rev = await store.txn([Compare.mod_revision_is(a, rev_a)], ops)
    assert ok
    kv = await store.get(b)
    assert kv is not None
    assert (kv.value, kv.mod_revision) == (b"success", rev)
    assert await store.get(a) is None


# -- watches ------------------------------------------------------------------------------------


async def test_watch_from_revision_in_order(store: EtcdStore, prefix: str) -> None:
    await store.put(prefix + "before", b"0")
    rev_a = await store.put(prefix + "a", b"1")
    rev_b = await store.put(prefix + "b", b"2")
    col = Collector(store.watch(prefix, start_revision=rev_a))
    try:
        rev_del = await store.delete(prefix + "a")
        events = await col.wait_for(3)
        assert [(e.key, e.op, e.value, e.mod_revision) for e in events] == [
            (prefix + "a", "put", b"1", rev_a),
            (prefix + "b", "put", b"2", rev_b),
            (prefix + "a", "delete", b"", rev_del),
        ]
        rev_c = await store.put(prefix + "c", b"3")
        events = await col.wait_for(4)
        last = events[3]
        assert (last.key, last.mod_revision, last.create_revision) == (prefix + "c", rev_c, rev_c)
    finally:
        await col.aclose()
    assert col.task.cancelled()


async def test_watch_break_closes_stream(store: EtcdStore, prefix: str) -> None:
    rev = await store.put(prefix + "a", b"1")
    async with contextlib.aclosing(store.watch(prefix, start_revision=rev)) as it:
        async for ev in it:
            assert ev.mod_revision == rev
            break
    # The store still works and a new watch on the same channel is fine.
    col = Collector(store.watch(prefix, start_revision=rev))
    try:
        assert len(await col.wait_for(1)) == 1
    finally:
        await col.aclose()


async def test_watch_compacted_raises_with_compact_revision(private_etcd: EtcdServer) -> None:
    async with EtcdStore.open([private_etcd.endpoint]) as store:
        first = await store.put("/c/a", b"1")
        await store.put("/c/a", b"2")
        last = await store.put("/c/a", b"3")
        await store.compact(last)
        with pytest.raises(Compacted) as info:
            async for _ in store.watch("/c/", start_revision=first):
                pass
        assert info.value.compact_revision == last
        assert isinstance(info.value, Unavailable)
        with pytest.raises(Compacted):
            async for _ in store.watch_with_resume("/c/", start_revision=first):
                pass
        # From the compaction point on, history is there.
        col = Collector(store.watch("/c/", start_revision=last))
        try:
            assert [e.value for e in await col.wait_for(1)] == [b"3"]
        finally:
            await col.aclose()


async def test_watch_with_resume_across_etcd_restart(private_etcd: EtcdServer) -> None:
    async with EtcdStore.open([private_etcd.endpoint], request_timeout_s=2.0) as store:
        start = (await store.get_prefix("/w/")).revision + 1
        col = Collector(store.watch_with_resume("/w/", start_revision=start))
        try:
            before = [await store.put(f"/w/{i}", str(i).encode()) for i in range(3)]
            await col.wait_for(3)
            await asyncio.to_thread(private_etcd.restart)
            # The first call after etcd is back works: no waiting out a gRPC reconnect backoff.
            after = [await store.put(f"/w/{i}", str(i).encode()) for i in range(3, 6)]
            events = await col.wait_for(6)
            await asyncio.sleep(0.3)  # room for a duplicate to show up
            assert [e.mod_revision for e in col.events] == before + after
            assert [e.key for e in col.events] == [f"/w/{i}" for i in range(6)]
            assert len(events) == 6
        finally:
            await col.aclose()


# -- availability -------------------------------------------------------------------------------


async def test_calls_fail_fast_while_down_and_work_after_restart(private_etcd: EtcdServer) -> None:
    async with EtcdStore.open([private_etcd.endpoint], request_timeout_s=3.0) as store:
        await store.put("/u/a", b"1")
        await asyncio.to_thread(private_etcd.stop)
        for _ in range(3):  # both the broken connection and the reconnect backoff fail fast
            t0 = time.monotonic()
            with pytest.raises(Unavailable) as info:
                await store.get("/u/a")
            assert not isinstance(info.value, DependencyTimeout)
            assert time.monotonic() - t0 < 1.5
            assert info.value.fields["op"] == "get"
            await asyncio.sleep(0.4)
        await asyncio.to_thread(private_etcd.start)
        kv = await store.get("/u/a")
        assert kv is not None
        assert kv.value == b"1"


async def test_open_unreachable_raises_unavailable() -> None:
    t0 = time.monotonic()
    with pytest.raises(Unavailable):
        async with EtcdStore.open([f"127.0.0.1:{free_port()}"], dial_timeout_s=1.0):
            pass
    assert time.monotonic() - t0 < 3.0


async def test_closed_store_refuses_calls(etcd_server: EtcdServer) -> None:
    store = EtcdStore([etcd_server.endpoint])
    await store.connect()
    await store.aclose()
    await store.aclose()
    assert store.is_closed
    with pytest.raises(RuntimeError):
        await store.get("/x")


# -- leases -------------------------------------------------------------------------------------


async def test_lease_grant_refresh_revoke(store: EtcdStore, prefix: str) -> None:
    key = prefix + "leased"
    lease = await store.grant(5)
    await store.put(key, b"v", lease=lease)
    kv = await store.get(key)
    assert kv is not None
    assert kv.lease == lease
    assert 0 < await store.refresh(lease) <= 5
    await store.revoke(lease)
    assert await store.get(key) is None
    with pytest.raises(LeaseLost) as info:
        await store.refresh(lease)
    assert info.value.lease_id == lease
    with pytest.raises(LeaseLost):
        await store.put(key, b"v", lease=lease)
    with pytest.raises(LeaseLost):
        await store.create(key, b"v", lease=lease)
    await store.revoke(lease)  # already gone: fine
    with pytest.raises(InvalidInput):
        await store.grant(0)


async def test_lease_expiry_deletes_key(store: EtcdStore, prefix: str) -> None:
    key = prefix + "expiring"
    lease = await store.grant(2)
    rev = await store.put(key, b"v", lease=lease)
    col = Collector(store.watch(prefix, start_revision=rev + 1))
    try:
        events = await col.wait_for(1, timeout_s=2 + 4)
        assert (events[0].key, events[0].op) == (key, "delete")
    finally:
        await col.aclose()


async def test_revision_is_the_store_revision_without_reading_values(store: EtcdStore, prefix: str) -> None:
    before = await store.revision(prefix)
    written = await store.put(f"{prefix}a", b"x" * 1000)
    assert written > before
    assert await store.revision(prefix) == written == (await store.get_prefix(prefix)).revision
    assert await store.revision(f"{prefix}nothing-here/") == written
