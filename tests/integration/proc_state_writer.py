"""A publishing process for the relay no-loss test: StateStore writes plus a state relay.

    python -m tests.integration.proc_state_writer NATS_URL ETCD_ENDPOINT ROOT PROGRESS_FILE TOTAL

Change ``i`` (0 <= i < TOTAL) touches room ``room-{i % 100:03d}``: every 7th change deletes its
meta, the others put a meta whose maxAnchors encodes ``i``. The index of the next change is kept
in PROGRESS_FILE, so a restarted process goes on where the killed one stopped (redoing at most
the change it was killed in, which is harmless). The test SIGKILLs it at random points.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from common import records
from common.bus import Bus
from common.etcd import EtcdStore
from common.keys import Keyspace, StateKey
from common.relay import StateRelay
from common.state import StateStore


def change(i: int) -> tuple[StateKey, records.RoomMeta | None]:
    room = f"room-{i % 100:03d}"
    skey = StateKey("rooms", room, "meta")
    if i % 7 == 6:
        return skey, None
    meta = records.RoomMeta(
        pin="",
        max_anchors=1 + i % 5,
        hls_path=f"{room}/stream.m3u8",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return skey, meta


async def main(nats_url: str, etcd_endpoint: str, root: str, progress: Path, total: int) -> None:
    keyspace = Keyspace.under(root)
    start = int(progress.read_text()) if progress.exists() else 0
    async with EtcdStore.open([etcd_endpoint]) as etcd, Bus.open([nats_url], name="writer") as bus:
        store = StateStore(etcd, bus, keyspace)
        async with StateRelay(etcd=etcd, bus=bus, keyspace=keyspace, name="writer"):
            for i in range(start, total):
                skey, meta = change(i)
                if meta is None:
                    await store.delete(skey)
                else:
                    await store.put(skey, meta)
                # Atomic, so a reader (or a restart after SIGKILL) never sees a half-written file.
                tmp = progress.with_suffix(".tmp")
                tmp.write_text(str(i + 1))
                tmp.replace(progress)
            print("done", flush=True)
            await asyncio.sleep(3600)  # keep relaying until the test stops us


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), int(sys.argv[5])))
