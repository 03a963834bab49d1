"""The reconcile runtime against real NATS and etcd: snapshot, events, staleness, DLQ, outages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from common import keys, records
from common.bus import Bus
from common.etcd import EtcdStore
from common.keys import Keyspace, StateKey
from common.reconcile import Interest, ReconcileRuntime, Target
from common.relay import StateRelay
from common.state import StateStore, state_event_message
from tests.integration.eventcore import cache_state, etcd_state, eventually, room_meta
from tests.servers import EtcdServer, NatsServer


class Recorder:
    """A reconcile function that remembers what it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Target, dict[str, Any]]] = []

    async def __call__(self, target: Target, view: Mapping[str, Any]) -> None:
        self.calls.append((target, dict(view)))

    def last_view(self, target: Target) -> dict[str, Any] | None:
        views = [v for t, v in self.calls if t == target]
        return views[-1] if views else None


def runtime_for(etcd: EtcdStore, bus: Bus, keyspace: Keyspace, rec: Recorder, **kw: Any) -> ReconcileRuntime:
    return ReconcileRuntime(
        service="svc_test",
        instance=kw.pop("instance", "one"),
        etcd=etcd,
        bus=bus,
        keyspace=keyspace,
        interests=[Interest("rooms", frozenset({"meta", "livemeta"}))],
        reconcile=rec,
        resync_interval_s=kw.pop("resync_interval_s", 3600),
        **kw,
    )


async def test_snapshot_rebuild_then_events_drive_reconcile(
    etcd: EtcdStore, bus: Bus, keyspace: Keyspace
) -> None:
    store = StateStore(etcd, bus, keyspace)
    await store.put(StateKey("rooms", "before", "meta"), room_meta("before"))
    rec = Recorder()
    rebuilt: list[int] = []

    async def rebuild(cache: Any) -> None:
        rebuilt.append(len(cache))

    async with runtime_for(etcd, bus, keyspace, rec, rebuild=rebuild) as rt:
        assert rebuilt == [1]
        before = Target("rooms", "before")
        await eventually(lambda: rec.last_view(before), 5, "snapshot id reconciled")
        assert rec.last_view(before) == {"meta": room_meta("before")}

        after = Target("rooms", "after")
        await store.put(StateKey("rooms", "after", "meta"), room_meta("after", 2))
        await eventually(lambda: rec.last_view(after), 5, "event reconciled")
        assert rec.last_view(after) == {"meta": room_meta("after", 2)}

        await store.delete(StateKey("rooms", "after", "meta"))
        await eventually(lambda: rec.last_view(after) == {}, 5, "delete reconciled with an empty view")
        assert rt.cache.get("rooms", "after", "meta") is None

        # Kinds the service did not ask for never reach it.
        await store.put(
            StateKey("rooms", "after", "mixer"),
            records.MixerRecord(
                id="mixer-1",
                host="127.0.0.1",
                port=10000,
                status=records.MixerStatus.READY,
                updated_at=room_meta("x").created_at,
            ),
        )
        await store.put(StateKey("rooms", "fence", "meta"), room_meta("fence"))
        await eventually(lambda: rec.last_view(Target("rooms", "fence")), 5, "fence event")
        assert rec.last_view(after) == {}


async def test_stale_events_are_ignored(etcd: EtcdStore, bus: Bus, keyspace: Keyspace) -> None:
    store = StateStore(etcd, bus, keyspace)
    skey = StateKey("rooms", "stale", "meta")
    first = await store.put(skey, room_meta("stale", 1))
    await store.put(skey, room_meta("stale", 4))
    rec = Recorder()
    async with runtime_for(etcd, bus, keyspace, rec) as rt:
        target = Target("rooms", "stale")
        await eventually(lambda: rec.last_view(target), 5, "initial reconcile")
        calls = len(rec.calls)
        # Replay the first write's event: older than the cache, so nothing may change.
        value = records.unstructure(room_meta("stale", 1))
        subject, payload, _ = state_event_message(
            keyspace, skey, op=records.StateOp.PUT, revision=first, value=value
        )
        await bus.publish(subject, payload)
        # And a fresh, unrelated event as a fence: once it is applied, the stale one was handled.
        await store.put(StateKey("rooms", "fence", "meta"), room_meta("fence"))
        await eventually(lambda: rec.last_view(Target("rooms", "fence")), 5, "fence event")
        assert rt.cache.get("rooms", "stale", "meta") == room_meta("stale", 4)
        assert [t for t, _ in rec.calls[calls:]] == [Target("rooms", "fence")]
        assert rt.stats.events_stale >= 1


async def test_malformed_message_goes_to_the_dead_letter_subject(
    etcd: EtcdStore, bus: Bus, keyspace: Keyspace
) -> None:
    rec = Recorder()
    dlq = await bus.js.subscribe(keys.dlq_subject("svc_test"), stream=keys.DLQ_STREAM)
    try:
        async with runtime_for(etcd, bus, keyspace, rec) as rt:
            await bus.publish("rtc.state.rooms.broken.meta", b"{not json")
            bad_value = {
                "key": keyspace.room_key("broken", "meta"),
                "op": "put",
                "revision": 5,
                "modRevision": 5,
                "value": {"pin": 123},
            }
            await bus.publish("rtc.state.rooms.broken.meta", json.dumps(bad_value).encode())
            first = await dlq.next_msg(timeout=5)
            second = await dlq.next_msg(timeout=5)
            letters = [json.loads(m.data) for m in (first, second)]
            assert [letter["subject"] for letter in letters] == ["rtc.state.rooms.broken.meta"] * 2
            assert letters[0]["payload"] == "{not json"
            assert "pin" in letters[1]["error"]
            assert all(letter["sequence"] > 0 and letter["service"] == "svc_test" for letter in letters)
            # The consumer goes on.
            await StateStore(etcd, bus, keyspace).put(StateKey("rooms", "fine", "meta"), room_meta("fine"))
            await eventually(lambda: rec.last_view(Target("rooms", "fine")), 5, "event after bad ones")
            assert rt.stats.dead_letters == 2
            assert rt.cache.get("rooms", "broken", "meta") is None
    finally:
        await dlq.unsubscribe()


async def test_restarted_consumer_converges_after_missing_events(
    etcd: EtcdStore, bus: Bus, keyspace: Keyspace
) -> None:
    store = StateStore(etcd, bus, keyspace)
    rec = Recorder()
    async with runtime_for(etcd, bus, keyspace, rec):
        await store.put(StateKey("rooms", "r-keep", "meta"), room_meta("r-keep"))
        await store.put(StateKey("rooms", "r-gone", "meta"), room_meta("r-gone"))
    # While nobody consumes: changes pile up in the stream (and in etcd).
    await store.delete(StateKey("rooms", "r-gone", "meta"))
    for i in range(20):
        await store.put(StateKey("rooms", f"r-new-{i}", "meta"), room_meta(f"r-new-{i}", 1 + i % 5))
    for instance in ("one", "two"):  # the same durable consumer, and a brand-new instance
        rec2 = Recorder()
        async with runtime_for(etcd, bus, keyspace, rec2, instance=instance) as rt:
            want = await etcd_state(etcd, keyspace)
            await eventually(
                lambda rt=rt, want=want: cache_state(rt, keyspace) == want, 10, f"{instance} converged"
            )
            assert rt.cache.get("rooms", "r-gone", "meta") is None
            await eventually(lambda rec2=rec2: len({t for t, _ in rec2.calls}) >= 21, 10, "all reconciled")


async def _write_through(store: StateStore, n: int, prefix: str) -> None:
    """Write n rooms, retrying each write until its dependency is back (as a service would)."""
    for i in range(n):
        while True:
            try:
                await store.put(
                    StateKey("rooms", f"{prefix}-{i:03d}", "meta"), room_meta(f"{prefix}-{i}", 1 + i % 5)
                )
                break
            except Exception:
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.01)


@pytest.mark.slow
async def test_nats_restart_during_changes_is_survived(
    etcd: EtcdStore, nats_private: NatsServer, keyspace: Keyspace
) -> None:
    async with (
        Bus.open([nats_private.url], name="writer") as wbus,
        Bus.open([nats_private.url], name="reader") as rbus,
    ):
        store = StateStore(etcd, wbus, keyspace)
        rec = Recorder()
        async with (
            runtime_for(etcd, rbus, keyspace, rec) as rt,
            StateRelay(etcd=etcd, bus=wbus, keyspace=keyspace),
        ):
            writer = asyncio.create_task(_write_through(store, 150, "nr"))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(nats_private.restart)
            await writer
            await store.put(StateKey("rooms", "nr-last", "meta"), room_meta("nr-last"))
            want = await etcd_state(etcd, keyspace)
            assert len(want) == 151
            await eventually(
                lambda: cache_state(rt, keyspace) == want, 20, "cache equals etcd after NATS restart"
            )
            await eventually(lambda: rec.last_view(Target("rooms", "nr-last")), 10, "last room reconciled")


@pytest.mark.slow
async def test_etcd_restart_during_changes_is_survived(tmp_path: Path, bus: Bus, keyspace: Keyspace) -> None:
    server = EtcdServer(tmp_path / "etcd-private")
    server.start()
    try:
        async with EtcdStore.open([server.endpoint]) as etcd:
            store = StateStore(etcd, bus, keyspace)
            rec = Recorder()
            async with (
                runtime_for(etcd, bus, keyspace, rec, resync_interval_s=2) as rt,
                StateRelay(etcd=etcd, bus=bus, keyspace=keyspace),
            ):
                writer = asyncio.create_task(_write_through(store, 150, "er"))
                await asyncio.sleep(0.5)
                await asyncio.to_thread(server.restart)
                await writer
                want = await etcd_state(etcd, keyspace)
                assert len(want) == 150
                await eventually(
                    lambda: cache_state(rt, keyspace) == want, 20, "cache equals etcd after etcd restart"
                )
    finally:
        server.stop()


async def test_a_replayed_put_of_a_deleted_key_does_not_resurrect_it_after_a_resync(
    etcd: EtcdStore, bus: Bus, keyspace: Keyspace
) -> None:
    store = StateStore(etcd, bus, keyspace)
    skey = StateKey("rooms", "ghost", "livemeta")
    meta = StateKey("rooms", "ghost", "meta")
    target = Target("rooms", "ghost")
    rec = Recorder()
    async with runtime_for(etcd, bus, keyspace, rec) as rt:
        await store.put(meta, room_meta("ghost"))
        created = await store.put(skey, room_meta("ghost"))
        await eventually(lambda: rec.last_view(target) == {"meta": room_meta("ghost")}, 5, "room seen")
        await store.delete(skey)
        await store.delete(meta)
        await eventually(lambda: rec.last_view(target) == {}, 5, "delete reconciled")
        # The resync drops the tombstones (etcd's snapshot already shows the key gone).
        await rt._load_snapshot(initial=False)
        assert rt.cache._tombstones == {}
        calls = len(rec.calls)
        # A late copy of the create, as a relay catching up or a redelivery would publish it.
        subject, payload, _ = state_event_message(
            keyspace,
            meta,
            op=records.StateOp.PUT,
            revision=created - 1,
            value=records.unstructure(room_meta("ghost")),
        )
        await bus.publish(subject, payload)
        await store.put(StateKey("rooms", "fence", "meta"), room_meta("fence"))
        await eventually(lambda: rec.last_view(Target("rooms", "fence")), 5, "fence event")
        assert rt.cache.get("rooms", "ghost", "meta") is None
        assert rt.cache.view(target) == {}
        # not reconciled as if the room were back
        assert [t for t, _ in rec.calls[calls:]] == [Target("rooms", "fence")]
        assert rt.stats.events_stale >= 1


async def test_periodic_resync_repairs_a_cache_that_missed_everything(
    etcd: EtcdStore, bus: Bus, keyspace: Keyspace
) -> None:
    # Writes straight to etcd with no publish and no relay: only the resync can find them.
    rec = Recorder()
    async with runtime_for(etcd, bus, keyspace, rec, resync_interval_s=0.5) as rt:
        silent = StateStore(etcd, None, keyspace)
        await silent.put(StateKey("rooms", "quiet", "meta"), room_meta("quiet"))
        await eventually(lambda: rec.last_view(Target("rooms", "quiet")), 5, "resync found the silent write")
        await silent.delete(StateKey("rooms", "quiet", "meta"))
        await eventually(
            lambda: rec.last_view(Target("rooms", "quiet")) == {}, 5, "resync found the silent delete"
        )
        assert rt.stats.resync_changes >= 2


async def test_consumer_of_a_gone_instance_is_removed_by_the_inactivity_threshold(
    etcd: EtcdStore, bus: Bus, keyspace: Keyspace
) -> None:
    rec = Recorder()
    async with runtime_for(etcd, bus, keyspace, rec, instance="short-lived", inactive_threshold_s=1.0) as rt:
        info = await bus.js.consumer_info(keys.STATE_STREAM, rt.durable_name)
        assert info.config.filter_subjects == ["rtc.state.rooms.*.livemeta", "rtc.state.rooms.*.meta"]
    names = [c.name for c in await bus.js.consumers_info(keys.STATE_STREAM)]
    assert "svc_test-short-lived" in names

    async def gone() -> bool:
        return "svc_test-short-lived" not in [c.name for c in await bus.js.consumers_info(keys.STATE_STREAM)]

    await eventually(gone, 10, "the idle consumer was removed by the server")


@pytest.mark.parametrize("deliver_policy", [DeliverPolicy.NEW, DeliverPolicy.ALL])
async def test_an_existing_consumer_with_other_filters_is_brought_to_the_runtime_config(
    etcd: EtcdStore, bus: Bus, keyspace: Keyspace, deliver_policy: DeliverPolicy
) -> None:
    # A durable of the same name from an older version of the service: other subjects (and, in
    # the second case, a deliver policy the server cannot update in place).
    await bus.js.add_consumer(
        keys.STATE_STREAM,
        ConsumerConfig(
            durable_name="svc_test-one",
            deliver_policy=deliver_policy,
            ack_policy=AckPolicy.EXPLICIT,
            filter_subjects=["rtc.state.mixers.*.heartbeat"],
        ),
    )
    rec = Recorder()
    async with runtime_for(etcd, bus, keyspace, rec) as rt:
        info = await bus.js.consumer_info(keys.STATE_STREAM, rt.durable_name)
        assert info.config.filter_subjects == ["rtc.state.rooms.*.livemeta", "rtc.state.rooms.*.meta"]
        assert info.config.deliver_policy == DeliverPolicy.NEW
        # Events on the runtime's subjects reach reconcile (no resync: its interval is an hour).
        await StateStore(etcd, bus, keyspace).put(StateKey("rooms", "new-filter", "meta"), room_meta("nf"))
        await eventually(lambda: rec.last_view(Target("rooms", "new-filter")), 5, "event on the new filter")


@pytest.mark.parametrize("when", ["pulling", "at_start"])
async def test_a_consumer_deleted_while_running_is_recreated_and_resnapshotted(
    etcd: EtcdStore, bus: Bus, keyspace: Keyspace, when: str
) -> None:
    rec = Recorder()
    store = StateStore(etcd, bus, keyspace)
    async with runtime_for(etcd, bus, keyspace, rec) as rt:
        if when == "pulling":
            # An event went through, so a pull request is outstanding: the delete answers it (409).
            await store.put(StateKey("rooms", "before-delete", "meta"), room_meta("before-delete"))
            await eventually(lambda: rec.last_view(Target("rooms", "before-delete")), 5, "first event")
        # else: deleted before the first pull request went out (it meets no responder, 503) or
        # before the consume loop checked the consumer (it creates a new one).
        await bus.js.delete_consumer(keys.STATE_STREAM, rt.durable_name)
        # Straight to etcd, no event: only the re-snapshot after recreating the consumer can see
        # it (the periodic resync is an hour away).
        silent = StateStore(etcd, None, keyspace)
        await silent.put(StateKey("rooms", "after-delete", "meta"), room_meta("after-delete"))
        await eventually(lambda: rec.last_view(Target("rooms", "after-delete")), 5, "seen after the delete")

        async def exists() -> bool:
            names = [c.name for c in await bus.js.consumers_info(keys.STATE_STREAM)]
            return rt.durable_name in names

        await eventually(exists, 5, "the consumer exists again")
        # And it delivers again.
        await store.put(StateKey("rooms", "later", "meta"), room_meta("later"))
        await eventually(lambda: rec.last_view(Target("rooms", "later")), 5, "event after recreation")


async def test_a_consume_loop_that_dies_is_restarted_and_catches_up(
    etcd: EtcdStore, bus: Bus, keyspace: Keyspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder()
    store = StateStore(etcd, bus, keyspace)
    async with runtime_for(etcd, bus, keyspace, rec) as rt:
        assert rt.is_running
        handle = rt._handle
        died: list[str] = []

        async def dies_once(msg: Any) -> None:
            if not died:
                died.append(msg.subject)
                # as a request future cancelled under it would: not a shutdown
                raise asyncio.CancelledError
            await handle(msg)

        monkeypatch.setattr(rt, "_handle", dies_once)
        await store.put(StateKey("rooms", "lost-in-flight", "meta"), room_meta("lost-in-flight"))
        # Its message died with the loop, unacked (redelivered only after ack_wait, 30 s): the
        # restarted loop re-snapshots and reconciles it well before that.
        await eventually(
            lambda: rec.last_view(Target("rooms", "lost-in-flight")), 5, "reconciled after restart"
        )
        consume = rt._loops[f"{rt.durable_name}-consume"]
        assert died and consume.failures == 1 and consume.restarts == 1
        assert rt.is_running
        await store.put(StateKey("rooms", "next", "meta"), room_meta("next"))
        await eventually(lambda: rec.last_view(Target("rooms", "next")), 5, "events flow again")
    assert not rt.is_running
