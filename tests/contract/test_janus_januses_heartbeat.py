"""Contract of ``rtc.state.januses.{janusId}.heartbeat``: svc_janus (the real producer) puts
its heartbeat on start and again when the rooms it holds change; each message validates, and a
reconcile runtime (how svc_rooms consumes module state) caches it as a Heartbeat."""

from __future__ import annotations

from typing import Any

import pytest

from common import records
from common.bus import Bus
from common.contracts import contract_for
from common.etcd import EtcdStore
from common.keys import Keyspace
from common.state import StateStore
from svc_janus.app import running
from svc_janus.config import Config
from tests.integration.eventcore import captured, eventually, state_consumer, validated_puts
from tests.integration.svc_janus.janus_helpers import live_room, unique_id

pytestmark = pytest.mark.janus


async def test_producer_message_validates_and_a_consumer_accepts_it(
    manager_config: Config,
    store: StateStore,
    etcd: EtcdStore,
    bus: Bus,
    keyspace: Keyspace,
) -> None:
    subject = f"rtc.state.januses.{manager_config.janus_id}.heartbeat"
    assert "svc_janus" in contract_for(subject).producers
    consumer = state_consumer(
        etcd,
        bus,
        keyspace,
        collection="januses",
        kinds=frozenset({"heartbeat"}),
        service="svc_rooms",
        instance="contract-hb",
    )
    async with captured(bus, subject) as got, consumer, running(manager_config):
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
    assert [hb.streams for hb in validated_puts(got, "heartbeat")][:2] == [0, 1]
