"""Contract of ``rtc.events.rooms.{roomId}.janus_restarted``: svc_janus (the real producer)
publishes it after rebuilding a room its Janus lost; the message validates, is stored in
RTC_EVENTS, and decodes as the JanusRestarted record the gateway (its consumer) reads."""

from __future__ import annotations

import pytest

from common import keys, records
from common.bus import Bus
from common.contracts import contract_for, validate_payload
from common.keys import StateKey
from common.state import StateStore
from svc_janus.app import running
from svc_janus.config import Config
from svc_janus.janus_ws import JanusClient
from svc_janus.service import room_secret
from tests.integration.eventcore import captured, eventually
from tests.integration.svc_janus.janus_helpers import bridge_for, live_room, rooms_by_description, unique_id
from tests.servers_janus import JanusServer

pytestmark = pytest.mark.janus


async def test_producer_message_validates_and_a_consumer_accepts_it(
    manager_config: Config,
    store: StateStore,
    janus_client: JanusClient,
    janus_server: JanusServer,
    bus: Bus,
) -> None:
    room_id = unique_id("rst")
    subject = keys.event_subject("rooms", room_id, "janus_restarted")
    contract = contract_for(subject)
    assert "svc_janus" in contract.producers and contract.stream == keys.EVENTS_STREAM
    bridge = bridge_for(janus_client, janus_server)
    async with captured(bus, subject, stream=keys.EVENTS_STREAM) as got:
        async with running(manager_config):
            await live_room(store, room_id, janus_id=manager_config.janus_id)
            await eventually(lambda: store.get(StateKey("rooms", room_id, "janus")), 10, "room built")
            [number] = await rooms_by_description(bridge, room_id)
            # Janus loses the room (as in a restart): the manager rebuilds it and announces it.
            secret = room_secret(manager_config.admin_secret, manager_config.janus_id, room_id, number)
            await bridge.destroy_audiobridge_room(number, secret=secret)
            await eventually(lambda: len(got) == 1, 10, "janus_restarted published")
            rebuilt = await store.get(StateKey("rooms", room_id, "janus"))
        assert validate_payload(got[0].subject, got[0].data) is contract
        event = records.decode_payload(records.JanusRestarted, got[0].data, key=got[0].subject)
        assert (event.room_id, event.janus_id) == (room_id, manager_config.janus_id)
        assert rebuilt is not None and event.janus_room_id == rebuilt.record.janus_room_id
