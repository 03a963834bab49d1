"""HeartbeatKeeper against a real etcd: lease, refresh, revoke, crash, lost lease, update."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from common.errors import Unavailable
from common.etcd import KV, EtcdStore, LeaseLost, WatchEvent
from common.heartbeat import HeartbeatKeeper
from tests.servers import EtcdServer

TTL_S = 2.0
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def store(etcd_server: EtcdServer) -> AsyncIterator[EtcdStore]:
    async with EtcdStore.open([etcd_server.endpoint], request_timeout_s=3.0) as s:
        yield s


@pytest.fixture
def key() -> str:
    return f"/t-{uuid.uuid4().hex[:12]}/mixers/m1/heartbeat"


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s} s")


async def get(store: EtcdStore, key: str) -> KV:
    kv = await store.get(key)
    assert kv is not None, f"{key} missing"
    return kv


async def test_start_puts_key_with_lease_and_refresh_keeps_it(store: EtcdStore, key: str) -> None:
    async with HeartbeatKeeper(store, key, lambda: b"hb", ttl_s=TTL_S) as keeper:
        assert keeper.is_alive
        assert keeper.lease_id is not None
        kv = await get(store, key)
        assert (kv.value, kv.lease) == (b"hb", keeper.lease_id)
        await asyncio.sleep(2.5 * TTL_S)  # unrefreshed, the lease would be gone by now
        kv2 = await get(store, key)
        assert (kv2.lease, kv2.mod_revision) == (kv.lease, kv.mod_revision)  # refreshed, not re-put
        assert keeper.is_alive


async def test_stop_revokes_so_key_disappears_at_once(store: EtcdStore, key: str) -> None:
    keeper = HeartbeatKeeper(store, key, lambda: b"hb", ttl_s=30)
    await keeper.start()
    await keeper.start()  # idempotent
    lease = keeper.lease_id
    assert lease is not None
    await get(store, key)
    await keeper.stop()
    assert await store.get(key) is None
    assert keeper.lease_id is None
    assert not keeper.is_alive
    await keeper.aclose()  # idempotent
    with pytest.raises(RuntimeError):
        await keeper.start()


async def test_update_reputs_current_value_under_same_lease(store: EtcdStore, key: str) -> None:
    state = {"streams": 0}

    def make_value() -> bytes:
        return f'{{"streams":{state["streams"]}}}'.encode()

    async with HeartbeatKeeper(store, key, make_value, ttl_s=TTL_S) as keeper:
        assert (await get(store, key)).value == b'{"streams":0}'
        state["streams"] = 3
        assert await keeper.update()
        kv = await get(store, key)
        assert (kv.value, kv.lease) == (b'{"streams":3}', keeper.lease_id)


async def test_custom_put_callback_is_used(store: EtcdStore, key: str) -> None:
    calls: list[tuple[str, bytes, int]] = []

    async def put(k: str, v: bytes, lease: int) -> Any:
        calls.append((k, v, lease))
        return await store.put(k, v + b"!", lease=lease)

    async with HeartbeatKeeper(store, key, lambda: b"hb", ttl_s=TTL_S, put=put) as keeper:
        assert calls == [(key, b"hb", keeper.lease_id)]
        assert (await get(store, key)).value == b"hb!"


async def test_lease_revoked_behind_its_back_is_regranted(store: EtcdStore, key: str) -> None:
    async with HeartbeatKeeper(store, key, lambda: b"hb", ttl_s=TTL_S) as keeper:
        old = keeper.lease_id
        assert old is not None
        await store.revoke(old)
        assert await store.get(key) is None

        async def back() -> bool:
            kv = await store.get(key)
            return kv is not None and kv.lease != old

        # Noticed at the next refresh (TTL/3), re-granted after the first backoff step.
        await wait_until(back, TTL_S + 2, "heartbeat key back on a new lease")
        kv = await get(store, key)
        assert kv.lease == keeper.lease_id
        assert kv.value == b"hb"
        assert keeper.is_alive


async def test_etcd_outage_longer_than_ttl_regrants(tmp_path: Path) -> None:
    srv = EtcdServer(tmp_path / "etcd")
    srv.start()
    try:
        async with (
            EtcdStore.open([srv.endpoint], request_timeout_s=1.0) as store,
            HeartbeatKeeper(store, "/m/hb", lambda: b"hb", ttl_s=TTL_S) as keeper,
        ):
            old = keeper.lease_id
            await asyncio.to_thread(srv.stop)
            await asyncio.sleep(TTL_S + 2.5)
            assert not keeper.is_alive  # unreachable for longer than the TTL: lease given up
            await asyncio.to_thread(srv.start)

            async def regranted() -> bool:
                # the test's own client may still be reconnecting to the restarted etcd
                try:
                    kv = await store.get("/m/hb")
                except Unavailable:
                    return False
                return keeper.is_alive and kv is not None and kv.lease == keeper.lease_id != old

            await wait_until(regranted, 10, "heartbeat regranted after the outage")
            # The stale lease (etcd restores leases on restart) was revoked, not left to linger.
            assert old is not None
            await wait_until(lambda: _lease_gone(store, old), 5, "old lease revoked")
    finally:
        srv.stop()


async def _lease_gone(store: EtcdStore, lease: int) -> bool:
    try:
        await store.refresh(lease)
    except LeaseLost:
        return True
    return False


async def test_sigkilled_process_heartbeat_deleted_within_ttl_plus_2s(
    store: EtcdStore, key: str, etcd_server: EtcdServer
) -> None:
    start = (await store.get_prefix(key)).revision + 1
    events: list[tuple[float, WatchEvent]] = []
    deleted = asyncio.Event()

    async def watch() -> None:
        async for ev in store.watch(key, start_revision=start):
            events.append((time.monotonic(), ev))
            if ev.op == "delete":
                deleted.set()

    watcher = asyncio.create_task(watch())
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.helpers_heartbeat_proc",
        etcd_server.endpoint,
        key,
        str(TTL_S),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("ready "), line
        lease = int(line.split()[1], 16)
        assert (await get(store, key)).lease == lease
        await asyncio.sleep(TTL_S)  # it refreshes: still there after a full TTL
        await get(store, key)

        proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await proc.wait()
        async with asyncio.timeout(TTL_S + 2):
            await deleted.wait()
        deleted_at = next(t for t, ev in events if ev.op == "delete")
        print(f"heartbeat delete seen {deleted_at - killed_at:.2f} s after SIGKILL (ttl {TTL_S} s)")
        assert [ev.op for _, ev in events] == ["put", "delete"]
        assert await store.get(key) is None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
