"""Contract of ``rtc.state.rooms.{roomId}.janus``: svc_janus (the real producer) publishes it
when it builds a room; the payload validates, and a reconcile runtime (how svc_rooms and
svc_gateway consume state) accepts it into its cache as a JanusRecord."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from common import records
from common.bus import Bus
from common.contracts import contract_for
from common.etcd import EtcdStore
from common.keys import Keyspace
from common.reconcile import Target
from common.state import StateStore
from svc_janus.app import running
from svc_janus.config import Config
from tests.integration.eventcore import captured, eventually, state_consumer, validated_puts
from tests.integration.svc_janus.janus_helpers import live_room, mixer_record, stop_room, unique_id

pytestmark = pytest.mark.janus


async def test_producer_message_validates_and_a_consumer_accepts_it(
    manager_config: Config,
    store: StateStore,
    etcd: EtcdStore,
    bus: Bus,
    keyspace: Keyspace,
) -> None:
    room_id = unique_id("ct")
    subject = f"rtc.state.rooms.{room_id}.janus"
    assert "svc_janus" in contract_for(subject).producers
    seen: list[Any] = []

    async def consumer_reconcile(target: Target, view: Mapping[str, Any]) -> None:
        if target.id == room_id and "janus" in view:
            seen.append(view["janus"])

    consumer = state_consumer(
        etcd,
        bus,
        keyspace,
        collection="rooms",
        kinds=frozenset({"janus"}),
        service="svc_rooms",
        instance="contract",
        reconcile=consumer_reconcile,
    )
    async with captured(bus, subject) as got, consumer, running(manager_config):
        await live_room(store, room_id, janus_id=manager_config.janus_id)
        await mixer_record(store, room_id, 40000)
        await eventually(lambda: len(got) >= 2, 10, "room_created and forwarding published")
        await stop_room(store, room_id)
        await eventually(lambda: len(got) >= 3, 10, "the delete published")
        await eventually(lambda: len(seen) >= 1, 10, "the consumer reconciled the janus record")
    puts = validated_puts(got, "janus")
    assert all(rec.janus_id == manager_config.janus_id for rec in puts)
    assert [rec.status for rec in puts][:2] == [
        records.JanusStatus.ROOM_CREATED,
        records.JanusStatus.FORWARDING,
    ]
    # the forwarder feeding the mixer is named once there is one (the mixer compares it)
    assert puts[0].forwarder_stream_id is None and puts[1].forwarder_stream_id is not None
    assert records.decode_event(got[-1].data).op is records.StateOp.DELETE
    assert isinstance(seen[0], records.JanusRecord)
