"""A process that keeps one heartbeat alive until killed (test_heartbeat SIGKILLs it).

Usage: python -m tests.integration.helpers_heartbeat_proc ENDPOINT KEY TTL_S
Prints ``ready <lease id hex>`` once the key is written, then sleeps forever.
"""

from __future__ import annotations

import asyncio
import sys

from common.etcd import EtcdStore
from common.heartbeat import HeartbeatKeeper


async def main(endpoint: str, key: str, ttl_s: float) -> None:
    async with (
        EtcdStore.open([endpoint]) as store,
        HeartbeatKeeper(store, key, lambda: b'{"status":"healthy"}', ttl_s=ttl_s) as keeper,
    ):
        print(f"ready {keeper.lease_id:x}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
