"""Contract of ``rtc.state.januses.{janusId}.heartbeat``: svc_janus (the real producer) puts
its heartbeat on start and again when the rooms it holds change; each message validates, and a
reconcile runtime (how svc_rooms consumes module state) caches it as a Heartbeat."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from nats.aio.msg import Msg

from common import records
from common.bus import Bus
from common.contracts import contract_for, validate_payload
from common.etcd import EtcdStore
from common.keys import Keyspace
from common.reconcile import Interest, ReconcileRuntime, Target
from common.state import StateStore
from svc_janus.app import running
from svc_janus.config import Config
from tests.integration.eventcore import eventually
from tests.integration.svc_janus.janus_helpers import live_room, unique_id

pytestmark = pytest.mark.janus


async def _noop(_target: Target, _view: Mapping[str, Any]) -> None:
    return None


async def test_producer_message_validates_and_a_consumer_accepts_it(
    manager_config: Config,
    store: StateStore,
    etcd: EtcdStore,
    bus: Bus,
    keyspace: Keyspace,
) -> None:
    subject = f"rtc.state.januses.{manager_config.janus_id}.heartbeat"
    assert "svc_janus" in contract_for(subject).producers
    got: list[Msg] = []

    async def collect(msg: Msg) -> None:
        got.append(msg)

    sub = await bus.nc.subscribe(subject, cb=collect)
    consumer = ReconcileRuntime(
        service="svc_rooms",
        instance="contract-hb",
        etcd=etcd,
        bus=bus,
        keyspace=keyspace,
        interests=[Interest("januses", frozenset({"heartbeat"}))],
        reconcile=_noop,
    )
    try:
        async with consumer, running(manager_config):
            await eventually(lambda: len(got) >= 1, 10, "heartbeat published on start")
            await live_room(store, unique_id("hb"), janus_id=manager_config.janus_id)
            await eventually(lambda: len(got) >= 2, 10, "heartbeat re-published with streams 1")

            def cached() -> Any:
                return consumer.cache.get("januses", manager_config.janus_id, "heartbeat")

            await eventually(lambda: cached() is not None and cached().streams == 1, 10, "consumer cache")
            beat = cached()
            assert isinstance(beat, records.Heartbeat)
            assert (beat.host, beat.capacity) == (
                manager_config.janus_adv_host,
                manager_config.janus_capacity,
            )
        streams = []
        for msg in got:
            validate_payload(msg.subject, msg.data)
            event = records.decode_event(msg.data, subject=msg.subject)
            if event.op is records.StateOp.PUT:
                streams.append(records.decode_record("heartbeat", event.value, key=event.key).streams)
        assert streams[:2] == [0, 1]
    finally:
        await sub.unsubscribe()
