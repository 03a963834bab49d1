"""The consuming process of the event-latency benchmark.

    python -m tests.bench.proc_event_consumer NATS_URL ETCD_ENDPOINT ROOT N

Runs a reconcile runtime on the rooms of keyspace ROOT; ``reconcile`` stamps the wall-clock
time it is first invoked for each room. Prints ``ready`` once consuming, then, after N rooms
were reconciled, one JSON object ``{roomId: unix_time}`` and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

from common.bus import Bus
from common.etcd import EtcdStore
from common.keys import Keyspace
from common.reconcile import Interest, ReconcileRuntime, Target


async def main(nats_url: str, etcd_endpoint: str, root: str, n: int) -> None:
    seen: dict[str, float] = {}
    done = asyncio.Event()

    async def reconcile(target: Target, view: Mapping[str, Any]) -> None:
        if view and target.id not in seen:
            seen[target.id] = time.time()
            if len(seen) >= n:
                done.set()

    async with (
        EtcdStore.open([etcd_endpoint]) as etcd,
        Bus.open([nats_url], name="bench-consumer") as bus,
        ReconcileRuntime(
            service="bench",
            instance="latency",
            etcd=etcd,
            bus=bus,
            keyspace=Keyspace.under(root),
            interests=[Interest("rooms", frozenset({"meta"}))],
            reconcile=reconcile,
            resync_interval_s=3600,
        ),
    ):
        print("ready", flush=True)
        await asyncio.wait_for(done.wait(), 600)
        print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
