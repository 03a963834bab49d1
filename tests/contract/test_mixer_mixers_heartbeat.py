"""Contract of ``rtc.state.mixers.{mixerId}.heartbeat``: svc_mixer (the real producer) puts its
heartbeat on start and again when the rooms it serves change; each message validates, and a
reconcile runtime (how svc_rooms consumes module state) caches it as a Heartbeat."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from common import records
from common.bus import Bus
from common.contracts import contract_for, validate_payload
from common.etcd import EtcdStore
from common.keys import Keyspace, StateKey
from common.reconcile import Interest, ReconcileRuntime, Target
from common.state import StateStore
from svc_mixer.app import running
from tests.contract.test_mixer_rooms_mixer import mixer_config
from tests.integration.eventcore import eventually
from tests.integration.svc_mixer.mixer_helpers import onair, removing, unique_id
from tests.servers import EtcdServer, NatsServer

pytestmark = pytest.mark.ffmpeg


async def _noop(_target: Target, _view: Mapping[str, Any]) -> None:
    return None


async def test_producer_message_validates_and_a_consumer_accepts_it(
    tmp_path: Path,
    etcd_server: EtcdServer,
    nats_private: NatsServer,
    etcd: EtcdStore,
    bus: Bus,
    keyspace: Keyspace,
) -> None:
    config = mixer_config(tmp_path, etcd_server, nats_private, keyspace)
    subject = f"rtc.state.mixers.{config.mixer_id}.heartbeat"
    assert "svc_mixer" in contract_for(subject).producers
    got: list[Msg] = []

    async def collect(msg: Msg) -> None:
        got.append(msg)

    nc_sub = await bus.nc.subscribe(subject, cb=collect)
    store = StateStore(etcd, bus, keyspace)
    consumer = ReconcileRuntime(
        service="svc_rooms",
        instance="contract-mixer-hb",
        etcd=etcd,
        bus=bus,
        keyspace=keyspace,
        interests=[Interest("mixers", frozenset({"heartbeat"}))],
        reconcile=_noop,
    )
    room = unique_id("hb")
    try:
        async with consumer, running(config):
            await eventually(lambda: len(got) >= 1, 10, "heartbeat published on start")
            await store.put(StateKey("rooms", room, "livemeta"), onair(config.mixer_id))
            await eventually(lambda: len(got) >= 2, 10, "heartbeat re-published with streams 1")

            def cached() -> Any:
                return consumer.cache.get("mixers", config.mixer_id, "heartbeat")

            await eventually(lambda: cached() is not None and cached().streams == 1, 10, "consumer cache")
            beat = cached()
            assert isinstance(beat, records.Heartbeat)
            assert (beat.status, beat.host, beat.capacity) == (
                records.ModuleStatus.HEALTHY,
                config.host,
                config.mixer_capacity,
            )
            await store.put(StateKey("rooms", room, "livemeta"), removing())
            await eventually(lambda: cached() is not None and cached().streams == 0, 10, "streams back to 0")
        streams = []
        for msg in got:
            validate_payload(msg.subject, msg.data)
            event = records.decode_event(msg.data, subject=msg.subject)
            if event.op is records.StateOp.PUT:
                streams.append(records.decode_record("heartbeat", event.value, key=event.key).streams)
        assert streams[:3] == [0, 1, 0]
    finally:
        await nc_sub.unsubscribe()
