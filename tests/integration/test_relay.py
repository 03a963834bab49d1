"""The state relay: no loss under SIGKILL, lease expiry events, compaction recovery."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from common import keys, records
from common.bus import Bus
from common.etcd import EtcdStore
from common.keys import Keyspace, StateKey
from common.reconcile import Interest, ReconcileRuntime
from common.relay import StateRelay
from common.state import StateStore
from tests.integration.eventcore import cache_state, etcd_state, eventually, noop_reconcile, room_meta
from tests.servers import EtcdServer, NatsServer

REPO = Path(__file__).resolve().parents[2]


async def etcd_history(etcd: EtcdStore, prefix: str) -> list[tuple[str, int]]:
    """(key, revision) of every change under ``prefix`` since etcd started (nothing compacted yet)."""
    out: list[tuple[str, int]] = []
    watch = etcd.watch(prefix, start_revision=1)
    try:
        while True:
            try:
                event = await asyncio.wait_for(anext(watch), 1.0)
            except TimeoutError:
                return out
            out.append((event.key, event.mod_revision))
    finally:
        await watch.aclose()


def read_progress(path: Path) -> int:
    return int(path.read_text()) if path.exists() else 0


async def stream_messages(bus: Bus, subject: str) -> list[tuple[str, dict[str, object]]]:
    """(Nats-Msg-Id, payload) of every message stored on ``subject`` in RTC_STATE, in order."""
    sub = await bus.js.pull_subscribe(
        subject,
        stream=keys.STATE_STREAM,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=30),
    )
    out: list[tuple[str, dict[str, object]]] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1)
            except TimeoutError:
                break
            for m in msgs:
                out.append(((m.headers or {}).get("Nats-Msg-Id", ""), json.loads(m.data)))
                await m.ack()
    finally:
        await sub.unsubscribe()
    return out


@pytest.mark.slow
async def test_no_change_is_lost_when_the_publisher_is_killed(
    tmp_path: Path,
    nats_private: NatsServer,
    etcd_server: EtcdServer,
    etcd: EtcdStore,
    bus: Bus,
    keyspace: Keyspace,
) -> None:
    total = 1000
    root = keyspace.rooms.removesuffix("rooms/")
    progress = tmp_path / "progress"
    rng = random.Random(20261124)
    kills = 0
    runtime = ReconcileRuntime(
        service="svc_test",
        instance="noloss",
        etcd=etcd,
        bus=bus,
        keyspace=keyspace,
        interests=[Interest("rooms")],
        reconcile=noop_reconcile,
        resync_interval_s=3600,
    )
    async with runtime:
        while True:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.proc_state_writer",
                    nats_private.url,
                    etcd_server.endpoint,
                    root,
                    str(progress),
                    str(total),
                ],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            try:
                if read_progress(progress) >= total or kills >= 6:
                    # The last run: let it finish and relay everything.
                    await eventually(lambda: read_progress(progress) >= total, 60, "writer finished")
                    want = await etcd_state(etcd, keyspace)
                    await eventually(
                        lambda want=want: cache_state(runtime, keyspace) == want,
                        20,
                        "consumer holds exactly etcd's final state",
                    )
                    break
                # Kill it at a random point a little way into its run, mid-write if chance has it.
                kill_at = min(total - 1, read_progress(progress) + rng.randint(20, 150))
                await eventually(
                    lambda kill_at=kill_at: read_progress(progress) >= kill_at, 30, "writer progress"
                )
                await asyncio.sleep(rng.uniform(0, 0.01))
                proc.send_signal(signal.SIGKILL)
                kills += 1
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(10)
                assert proc.stdout is not None
                proc.stdout.close()
    assert read_progress(progress) == total
    assert kills >= 3, "the writer must have been killed mid-run several times"
    # Deleted rooms are gone, the others hold their last write.
    snap = await etcd.get_prefix(keyspace.rooms)
    assert len(snap.kvs) == len([r for r in range(100) if (total - 100 + r) % 7 != 6])
    ids = [msg_id for msg_id, _ in await stream_messages(bus, "rtc.state.rooms.>")]
    assert len(ids) == len(set(ids)), "a message id is stored twice"
    # No loss: every change etcd's history holds for these keys is in the stream, exactly once.
    history = await etcd_history(etcd, keyspace.rooms)
    assert len(history) > 900
    assert set(ids) == {f"{key}@{rev}" for key, rev in history}


async def test_heartbeat_of_a_killed_process_becomes_a_delete_event(
    tmp_path: Path,
    nats_private: NatsServer,
    etcd_server: EtcdServer,
    etcd: EtcdStore,
    bus: Bus,
    keyspace: Keyspace,
) -> None:
    ttl_s = 2
    key = keyspace.module_key("mixers", "mixer-k9", "heartbeat")
    heartbeat = records.Heartbeat(
        status=records.ModuleStatus.HEALTHY,
        host="127.0.0.1",
        capacity=10,
        streams=0,
        started_at=room_meta("x").created_at,
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.proc_heartbeat",
            etcd_server.endpoint,
            key,
            str(ttl_s),
            records.encode_record(heartbeat).decode(),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        sub = await bus.js.subscribe("rtc.state.mixers.mixer-k9.heartbeat", stream=keys.STATE_STREAM)
        async with StateRelay(etcd=etcd, bus=bus, keyspace=keyspace):
            put = json.loads((await sub.next_msg(timeout=10)).data)
            assert put["op"] == "put" and put["value"]["capacity"] == 10
            proc.send_signal(signal.SIGKILL)
            killed_at = asyncio.get_running_loop().time()
            delete = json.loads((await sub.next_msg(timeout=ttl_s + 4)).data)
            elapsed = asyncio.get_running_loop().time() - killed_at
            assert delete["op"] == "delete" and delete["key"] == key and delete["value"] is None
            assert elapsed <= ttl_s + 2, f"delete event after {elapsed:.1f} s"
        await sub.unsubscribe()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


async def test_relay_recovers_from_compaction_by_snapshot(
    etcd: EtcdStore, bus: Bus, keyspace: Keyspace
) -> None:
    silent = StateStore(etcd, None, keyspace)  # no direct publish: only the relay can tell
    await silent.put(StateKey("rooms", "early", "meta"), room_meta("early"))
    async with StateRelay(etcd=etcd, bus=bus, keyspace=keyspace, name="compaction") as relay:
        await relay.wait_caught_up(10)
    for i in range(5):
        await silent.put(StateKey("rooms", f"late-{i}", "meta"), room_meta(f"late-{i}", 2))
    await silent.delete(StateKey("rooms", "early", "meta"))
    head = await etcd.put(keyspace.room_key("marker", "meta"), records.encode_record(room_meta("marker")))
    await etcd.compact(head)

    async with StateRelay(etcd=etcd, bus=bus, keyspace=keyspace, name="compaction") as relay:
        await eventually(lambda: relay.stats.snapshots >= 1, 15, "snapshot after compaction")
        await relay.wait_caught_up(10)
        assert (await relay.load_checkpoint() or 0) >= head
    published = {p["key"]: p for _, p in await stream_messages(bus, "rtc.state.rooms.>")}
    for i in range(5):
        assert published[keyspace.room_key(f"late-{i}", "meta")]["op"] == "put"
    assert published[keyspace.room_key("marker", "meta")]["op"] == "put"


async def test_relay_resumes_from_its_checkpoint(etcd: EtcdStore, bus: Bus, keyspace: Keyspace) -> None:
    silent = StateStore(etcd, None, keyspace)
    async with StateRelay(etcd=etcd, bus=bus, keyspace=keyspace, name="resume") as relay:
        await silent.put(StateKey("rooms", "one", "meta"), room_meta("one"))
        await eventually(lambda: relay.stats.published >= 1, 10, "first publish")
        await relay.wait_caught_up(10)
    rev = await silent.put(StateKey("rooms", "two", "meta"), room_meta("two"))
    async with StateRelay(etcd=etcd, bus=bus, keyspace=keyspace, name="resume") as relay:
        await eventually(lambda: relay.stats.published >= 1, 10, "second publish")
        await eventually(lambda: relay.stats.checkpoint >= rev, 10, "checkpoint advanced")
        assert relay.stats.snapshots == 0
    ids = [i for i, _ in await stream_messages(bus, "rtc.state.rooms.>")]
    assert ids == [
        keyspace.room_key("one", "meta") + f"@{rev - 1}",
        keyspace.room_key("two", "meta") + f"@{rev}",
    ]


async def test_two_relays_at_once_publish_each_change_once(
    etcd: EtcdStore, bus: Bus, keyspace: Keyspace
) -> None:
    silent = StateStore(etcd, None, keyspace)
    async with (
        StateRelay(etcd=etcd, bus=bus, keyspace=keyspace, name="a") as a,
        StateRelay(etcd=etcd, bus=bus, keyspace=keyspace, name="b") as b,
    ):
        revisions = [
            await silent.put(StateKey("rooms", f"twice-{i}", "meta"), room_meta(f"twice-{i}"))
            for i in range(30)
        ]
        await eventually(
            lambda: a.stats.checkpoint >= revisions[-1] and b.stats.checkpoint >= revisions[-1],
            10,
            "both relays caught up",
        )
    ids = [i for i, _ in await stream_messages(bus, "rtc.state.rooms.>")]
    assert sorted(ids) == sorted(
        keyspace.room_key(f"twice-{i}", "meta") + f"@{rev}" for i, rev in enumerate(revisions)
    )
