"""Contract of ``rtc.state.rooms.{roomId}.mixer``: svc_mixer (the real producer) writes the
record when it serves an on-air room and deletes it when the room is removed; each message
validates, and a reconcile runtime (how svc_janus consumes it) caches it as a MixerRecord."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common import records
from common.bus import Bus
from common.contracts import contract_for, validate_payload
from common.etcd import EtcdStore
from common.keys import Keyspace, StateKey
from common.state import StateStore
from svc_mixer.app import running
from svc_mixer.config import Config
from tests.integration.eventcore import eventually, state_consumer
from tests.integration.svc_mixer.mixer_helpers import MixerProcess, onair, removing, unique_id
from tests.servers import EtcdServer, NatsServer

pytestmark = pytest.mark.ffmpeg


def mixer_config(tmp_path: Path, etcd_server: EtcdServer, nats: NatsServer, keyspace: Keyspace) -> Config:
    """The config a MixerProcess would get, for an in-process mixer."""
    proc = MixerProcess(
        tmp_path / "mixer", nats_url=nats.url, etcd_endpoint=etcd_server.endpoint, keyspace=keyspace
    )
    env = {k: v for k, v in proc.env.items() if k.isupper()}
    return Config.from_env(env)


async def test_producer_messages_validate_and_a_consumer_accepts_them(
    tmp_path: Path,
    etcd_server: EtcdServer,
    nats_private: NatsServer,
    etcd: EtcdStore,
    bus: Bus,
    keyspace: Keyspace,
) -> None:
    config = mixer_config(tmp_path, etcd_server, nats_private, keyspace)
    room = unique_id("contract")
    subject = f"rtc.state.rooms.{room}.mixer"
    assert "svc_mixer" in contract_for(subject).producers
    store = StateStore(etcd, bus, keyspace)
    sub = await bus.js.subscribe(subject, stream="RTC_STATE")
    consumer = state_consumer(
        etcd,
        bus,
        keyspace,
        collection="rooms",
        kinds=frozenset({"mixer"}),
        service="svc_janus",
        instance="contract-mixer",
    )
    try:
        async with consumer, running(config):
            await store.put(StateKey("rooms", room, "livemeta"), onair(config.mixer_id, generation=3))
            put = await sub.next_msg(timeout=10)
            validate_payload(put.subject, put.data)
            record = records.decode_record("mixer", json.loads(put.data)["value"])
            assert isinstance(record, records.MixerRecord)
            assert (record.id, record.host, record.status, record.generation) == (
                config.mixer_id,
                "127.0.0.1",
                records.MixerStatus.READY,
                3,
            )
            assert config.rtp_port_start <= record.port < config.rtp_port_end
            await eventually(lambda: consumer.cache.get("rooms", room, "mixer") == record, 5, "consumed")

            await store.put(StateKey("rooms", room, "livemeta"), removing())
            deleted = await sub.next_msg(timeout=10)
            validate_payload(deleted.subject, deleted.data)
            assert json.loads(deleted.data)["op"] == "delete"
            await eventually(lambda: consumer.cache.get("rooms", room, "mixer") is None, 5, "delete consumed")
    finally:
        await sub.unsubscribe()
