"""`just bench core`: the event core on real NATS and etcd (private servers on free ports).

- event_latency_ms_p50/p99: from the start of the etcd transaction of a StateStore.put to the
  first reconcile() of that room in another process, via JetStream; 5,000 events, written one
  after the other. Beside it, etcd_watch_latency_ms_p99: put start -> the same process's
  etcd watch event, the floor any etcd-driven design pays. event_latency_idle_ms_p99: the same
  for 200 more events written 20 ms apart (a lone event on a quiet stream must not wait).
- scheduler_enqueues_per_s: KeyedScheduler.enqueue with 10,000 distinct keys.
- relay_events_per_s: a relay catching up on 10,000 changes it has not published yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from common import records
from common.bus import Bus
from common.etcd import EtcdStore
from common.keys import Keyspace, StateKey
from common.relay import StateRelay
from common.state import StateStore
from tests.bench.scheduler_bench import measure_enqueues_per_s
from tests.servers import EtcdServer, NatsServer

__all__ = ["GOALS", "run"]

GOALS = {
    "event_latency_ms_p50": "<= 10",
    "event_latency_ms_p99": "<= 10",
    "event_latency_idle_ms_p99": "<= 10",
    "etcd_watch_latency_ms_p99": "<= 10",
    "scheduler_enqueues_per_s": ">= 100000",
    "relay_events_per_s": ">= 5000",
}

EVENTS = 5_000
IDLE_EVENTS = 200  # written 20 ms apart: the latency of a lone event on a quiet stream
WATCH_SAMPLES = 2_000
RELAY_EVENTS = 10_000
ROOT = Path(__file__).resolve().parents[2]


def _meta(i: int) -> records.RoomMeta:
    return records.RoomMeta(
        pin="", max_anchors=1 + i % 5, hls_path=f"bench-{i}/stream.m3u8", created_at=datetime.now(UTC)
    )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.asynccontextmanager
async def _servers() -> AsyncIterator[tuple[NatsServer, EtcdServer]]:
    with tempfile.TemporaryDirectory(prefix="bench-core-") as tmp:
        nats_server, etcd_server = NatsServer(Path(tmp) / "nats"), EtcdServer(Path(tmp) / "etcd")
        await asyncio.to_thread(nats_server.start)
        await asyncio.to_thread(etcd_server.start)
        try:
            yield nats_server, etcd_server
        finally:
            await asyncio.to_thread(nats_server.stop)
            await asyncio.to_thread(etcd_server.stop)


async def _event_latency(nats_server: NatsServer, etcd_server: EtcdServer) -> dict[str, float]:
    root = "/bench-latency/"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.proc_event_consumer",
        nats_server.url,
        etcd_server.endpoint,
        root,
        str(EVENTS + IDLE_EVENTS),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        limit=64 * 1024 * 1024,
    )
    assert proc.stdout is not None
    try:
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
        keyspace = Keyspace.under(root)
        started: dict[str, float] = {}
        async with (
            EtcdStore.open([etcd_server.endpoint]) as etcd,
            Bus.open([nats_server.url], name="bench") as bus,
        ):
            store = StateStore(etcd, bus, keyspace)
            for i in range(EVENTS + IDLE_EVENTS):
                room = f"bench-{i}"
                if i >= EVENTS:
                    await asyncio.sleep(0.02)
                started[room] = time.time()
                await store.put(StateKey("rooms", room, "meta"), _meta(i))
        seen = json.loads(await asyncio.wait_for(proc.stdout.readline(), 120))
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    latencies = [(seen[r] - t0) * 1000 for r, t0 in started.items()]
    busy, idle = latencies[:EVENTS], latencies[EVENTS:]
    return {
        "event_latency_ms_p50": round(statistics.median(busy), 3),
        "event_latency_ms_p99": round(_pct(busy, 0.99), 3),
        "event_latency_idle_ms_p99": round(_pct(idle, 0.99), 3),
    }


async def _watch_latency(etcd_server: EtcdServer) -> dict[str, float]:
    async with EtcdStore.open([etcd_server.endpoint]) as etcd:
        prefix = "/bench-watch/"
        head = await etcd.revision(prefix)
        arrived: dict[str, float] = {}
        got_all = asyncio.Event()

        async def watch() -> None:
            async for event in etcd.watch(prefix, start_revision=head + 1):
                arrived[event.key] = time.perf_counter()
                if len(arrived) >= WATCH_SAMPLES:
                    got_all.set()
                    return

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.2)
        started: dict[str, float] = {}
        for i in range(WATCH_SAMPLES):
            key = f"{prefix}k{i}"
            started[key] = time.perf_counter()
            await etcd.put(key, b"x")
        await asyncio.wait_for(got_all.wait(), 60)
        await task
    latencies = [(arrived[k] - t0) * 1000 for k, t0 in started.items()]
    return {
        "etcd_watch_latency_ms_p50": round(statistics.median(latencies), 3),
        "etcd_watch_latency_ms_p99": round(_pct(latencies, 0.99), 3),
    }


async def _relay_rate(nats_server: NatsServer, etcd_server: EtcdServer) -> dict[str, float]:
    keyspace = Keyspace.under("/bench-relay/")
    async with (
        EtcdStore.open([etcd_server.endpoint]) as etcd,
        Bus.open([nats_server.url], name="relay") as bus,
    ):
        relay = StateRelay(etcd=etcd, bus=bus, keyspace=keyspace, name="bench")
        await relay.save_checkpoint(await etcd.revision("/bench-relay/"))
        silent = StateStore(etcd, None, keyspace)  # etcd only: the relay has it all to do
        sem = asyncio.Semaphore(64)

        async def write(i: int) -> None:
            async with sem:
                await silent.put(StateKey("rooms", f"relay-{i % 1000}", "meta"), _meta(i))

        await asyncio.gather(*(write(i) for i in range(RELAY_EVENTS)))
        head = await etcd.revision("/bench-relay/")
        t0 = time.perf_counter()
        async with relay:
            while relay.stats.published < RELAY_EVENTS:  # noqa: ASYNC110 (5 ms polling is the clock here)
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - t0
            await relay.wait_caught_up(30)
        assert relay.stats.checkpoint >= head - 1
    return {"relay_events_per_s": round(RELAY_EVENTS / elapsed)}


async def run() -> dict[str, float]:
    results: dict[str, float] = {}
    results["scheduler_enqueues_per_s"] = round(await measure_enqueues_per_s())
    async with _servers() as (nats_server, etcd_server):
        results.update(await _event_latency(nats_server, etcd_server))
        results.update(await _watch_latency(etcd_server))
        results.update(await _relay_rate(nats_server, etcd_server))
    return results
