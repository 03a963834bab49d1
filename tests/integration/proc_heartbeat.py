"""A module process reduced to its heartbeat, for the lease-expiry event test.

    python -m tests.integration.proc_heartbeat ENDPOINT KEY TTL_S VALUE_JSON

Keeps VALUE_JSON alive on a lease under KEY until it is killed; prints ``ready`` when written.
"""

from __future__ import annotations

import asyncio
import sys

from common.etcd import EtcdStore
from common.heartbeat import HeartbeatKeeper


async def main(endpoint: str, key: str, ttl_s: float, value: bytes) -> None:
    async with EtcdStore.open([endpoint]) as store, HeartbeatKeeper(store, key, lambda: value, ttl_s=ttl_s):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4].encode()))
