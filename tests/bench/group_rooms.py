"""`just bench rooms`: svc_rooms as a process on private NATS and etcd, modules simulated.

- room_create_ms_p50/p99: POST /api/rooms -> 201 (the 201 comes after the etcd transaction that
  writes meta, the onair livemeta and both assignment slots), 500 rooms one after the other,
  from a client in this process over loopback HTTP (TCP_NODELAY, as browsers and curl use).
- rooms_1000_converge_s: create and start 1,000 rooms (32 requests in flight), then DELETE
  them all; the time from the first POST until etcd holds no room key. The simulated modules
  are heartbeats only (they never write janus/mixer records), so each removal finishes as soon
  as svc_rooms's reconcile sees the removing livemeta.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx

from common import records
from common.etcd import EtcdStore
from common.keys import Keyspace, StateKey
from common.state import StateStore
from tests.servers import EtcdServer, NatsServer, free_port

__all__ = ["GOALS", "run"]

GOALS = {
    "room_create_ms_p50": "<= 50",
    "room_create_ms_p99": "<= 50",
    "rooms_1000_converge_s": "<= 60",
}

LATENCY_ROOMS = 500
CONVERGE_ROOMS = 1_000
IN_FLIGHT = 32
ROOT = Path(__file__).resolve().parents[2]
API_TOKEN = "bench-api-token"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.asynccontextmanager
async def _svc_rooms(nats_server: NatsServer, etcd_server: EtcdServer, run_dir: Path) -> AsyncIterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "NATS_SERVERS": nats_server.url,
        "ETCD_ENDPOINTS": etcd_server.endpoint,
        "HTTP_ADDR": f"127.0.0.1:{port}",
        "API_TOKEN": API_TOKEN,
        "LOG_LEVEL": "warning",
    }
    log = (run_dir / "svc_rooms.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "svc_rooms", cwd=ROOT, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2.0) as client:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/health")).status_code == 200:
                        break
                if time.monotonic() > deadline or proc.returncode is not None:
                    raise RuntimeError(f"svc_rooms did not become healthy; see {run_dir / 'svc_rooms.log'}")
                await asyncio.sleep(0.1)
        yield url
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def _modules(store: StateStore, stack: contextlib.AsyncExitStack) -> None:
    """Two Janus and two mixer heartbeats with room for everything, kept alive on leases."""
    for collection, prefix in (("januses", "janus"), ("mixers", "mixer")):
        for i in (1, 2):
            lease = await store.etcd.grant(10)
            heartbeat = records.Heartbeat(
                status=records.ModuleStatus.HEALTHY,
                host="127.0.0.1",
                capacity=CONVERGE_ROOMS,
                streams=0,
                started_at=datetime.now(UTC),
            )
            await store.put(StateKey(collection, f"{prefix}-{i}", "heartbeat"), heartbeat, lease=lease)

            async def keepalive(lease_id: int = lease) -> None:
                while True:
                    await asyncio.sleep(2)
                    await store.etcd.refresh(lease_id)

            task = asyncio.create_task(keepalive())
            stack.callback(task.cancel)


async def _room_keys(etcd: EtcdStore) -> int:
    return len((await etcd.get_prefix(Keyspace().rooms)).kvs)


async def _create_latency(client: httpx.AsyncClient) -> dict[str, float]:
    latencies: list[float] = []
    for i in range(LATENCY_ROOMS):
        t0 = time.perf_counter()
        r = await client.post("/api/rooms", json={"roomId": f"lat-{i}"})
        latencies.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 201, r.text
    return {
        "room_create_ms_p50": round(statistics.median(latencies), 3),
        "room_create_ms_p99": round(_pct(latencies, 0.99), 3),
    }


async def _delete_all(client: httpx.AsyncClient, room_ids: list[str]) -> None:
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def one(room_id: str) -> None:
        async with sem:
            r = await client.delete(f"/api/rooms/{room_id}")
            assert r.status_code == 200, r.text

    await asyncio.gather(*(one(r) for r in room_ids))


async def _wait_empty(etcd: EtcdStore, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await _room_keys(etcd):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{await _room_keys(etcd)} room keys left after {timeout_s} s")
        await asyncio.sleep(0.05)


async def _converge(client: httpx.AsyncClient, etcd: EtcdStore) -> dict[str, float]:
    sem = asyncio.Semaphore(IN_FLIGHT)
    room_ids = [f"conv-{i}" for i in range(CONVERGE_ROOMS)]

    async def create(room_id: str) -> None:
        async with sem:
            r = await client.post("/api/rooms", json={"roomId": room_id})
            assert r.status_code == 201, r.text

    t0 = time.perf_counter()
    await asyncio.gather(*(create(r) for r in room_ids))
    await _delete_all(client, room_ids)
    await _wait_empty(etcd, 120)
    return {"rooms_1000_converge_s": round(time.perf_counter() - t0, 3)}


async def run() -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-rooms-") as tmp:
        run_dir = Path(tmp)
        nats_server, etcd_server = NatsServer(run_dir / "nats"), EtcdServer(run_dir / "etcd")
        await asyncio.to_thread(nats_server.start)
        await asyncio.to_thread(etcd_server.start)
        try:
            async with (
                contextlib.AsyncExitStack() as stack,
                EtcdStore.open([etcd_server.endpoint]) as etcd,
                _svc_rooms(nats_server, etcd_server, run_dir) as url,
                httpx.AsyncClient(
                    base_url=url,
                    headers={"Authorization": f"Bearer {API_TOKEN}"},
                    timeout=30.0,
                    # Without TCP_NODELAY the body, sent after the headers, waits for the
                    # server's delayed ACK (~40 ms): a client artefact, not server latency.
                    transport=httpx.AsyncHTTPTransport(
                        limits=httpx.Limits(max_connections=IN_FLIGHT),
                        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                    ),
                ) as client,
            ):
                await _modules(StateStore(etcd, None, Keyspace()), stack)
                await asyncio.sleep(1.0)  # the relay publishes the heartbeats; svc_rooms caches them
                results.update(await _create_latency(client))
                await _delete_all(client, [f"lat-{i}" for i in range(LATENCY_ROOMS)])
                await _wait_empty(etcd, 120)
                results.update(await _converge(client, etcd))
        finally:
            await asyncio.to_thread(nats_server.stop)
            await asyncio.to_thread(etcd_server.stop)
    return results
