"""Contract of ``rtc.state.mixers.{mixerId}.heartbeat``: svc_mixer (the real producer) puts its
heartbeat on start and again when the rooms it serves change; each message validates, and a
reconcile runtime (how svc_rooms consumes module state) caches it as a Heartbeat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common import records
from common.bus import Bus
from common.contracts import contract_for
from common.etcd import EtcdStore
from common.keys import Keyspace, StateKey
from common.state import StateStore
from svc_mixer.app import running
from tests.contract.test_mixer_rooms_mixer import mixer_config
from tests.integration.eventcore import captured, eventually, state_consumer, validated_puts
from tests.integration.svc_mixer.mixer_helpers import onair, removing, unique_id
from tests.servers import EtcdServer, NatsServer

pytestmark = pytest.mark.ffmpeg


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
    store = StateStore(etcd, bus, keyspace)
    consumer = state_consumer(
        etcd,
        bus,
        keyspace,
        collection="mixers",
        kinds=frozenset({"heartbeat"}),
        service="svc_rooms",
        instance="contract-mixer-hb",
    )
    room = unique_id("hb")
    async with captured(bus, subject) as got, consumer, running(config):
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
    assert [hb.streams for hb in validated_puts(got, "heartbeat")][:3] == [0, 1, 0]
