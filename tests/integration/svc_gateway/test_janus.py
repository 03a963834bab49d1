"""The gateway against a real Janus: two anchors on two gateway processes join one AudioBridge
room with aiortc offers and get answers, mute (their own ``mute`` and svc_users' command) reaches
the AudioBridge participant, a reconnect with the jtoken resumes the Janus session, and
``leave`` takes the participant out of the room.

ICE never connects on loopback (aiortc and Janus skip it): these tests check the signalling; the
WebRTC media path is the end-to-end test's (two network namespaces).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from common import keys, records
from common.bus import Bus
from common.errors import NotFound
from common.state import StateStore
from common.userkeys import UserKeys
from svc_janus.audiobridge import SAMPLING_RATE_HZ, AudioBridge
from svc_janus.janus_ws import JanusClient
from tests.integration.eventcore import eventually
from tests.integration.svc_gateway.gw_helpers import (
    UsersStandIn,
    client,
    running_gateway,
    seed_room,
    seed_user,
    user_token,
)
from tests.integration.svc_gateway.test_janus_pool import aiortc_offer
from tests.integration.svc_janus.janus_helpers import random_free_room
from tests.servers_janus import JanusServer

pytestmark = pytest.mark.janus

EnvFactory = Callable[..., dict[str, str]]
PIN = "pin123"
SECRET = "gw-room-secret"


@pytest.fixture(scope="module")
def offer() -> dict[str, str]:
    return asyncio.run(aiortc_offer())


@pytest.fixture
async def janus_room(janus_client: JanusClient, janus_server: JanusServer) -> AsyncIterator[int]:
    bridge = AudioBridge(janus_client, admin_key=janus_server.admin_key)
    number = await random_free_room(bridge)
    await janus_client.message(
        {
            "request": "create",
            "room": number,
            "admin_key": janus_server.admin_key,
            "description": "gateway-test",
            "secret": SECRET,
            "pin": PIN,
            "sampling_rate": SAMPLING_RATE_HZ,
            "permanent": False,
            "audiolevel_event": True,
        }
    )
    yield number
    with contextlib.suppress(NotFound):
        await janus_client.message({"request": "destroy", "room": number, "secret": SECRET})


async def participants(janus_client: JanusClient, room: int) -> dict[str, dict[str, Any]]:
    data = await janus_client.message({"request": "listparticipants", "room": room})
    return {p["display"]: p for p in data.get("participants", [])}


def join_params(**extra: Any) -> dict[str, Any]:
    return {"clientId": str(uuid.uuid4()), "pin": PIN, **extra}


async def test_two_gateways_join_offer_mute_resume_leave(
    env: EnvFactory,
    store: StateStore,
    redis: Redis,
    prefix: str,
    bus: Bus,
    users: UsersStandIn,
    janus_server: JanusServer,
    janus_client: JanusClient,
    janus_room: int,
    offer: dict[str, str],
) -> None:
    await seed_room(store, "room-j1", janus_room_id=janus_room, pin=PIN)
    a = await seed_user(redis, prefix, "room-j1")
    b = await seed_user(redis, prefix, "room-j1")
    gw_env = {"JANUS_WS_PORT": str(janus_server.ws_port)}
    async with running_gateway(env(**gw_env)) as gw1, running_gateway(env(**gw_env)) as gw2:
        async with client(gw1, user_token(a, "room-j1")) as ca, client(gw2, user_token(b, "room-j1")) as cb:
            joined_a = await ca.result("join", join_params())
            await cb.result("join", join_params())
            for c in (ca, cb):
                answer = (await c.result("offer", {"sdp": offer}))["sdp"]
                assert answer["type"] == "answer" and "opus/48000" in answer["sdp"]
            listed = await participants(janus_client, janus_room)
            assert {f"user-{a}", f"user-{b}"} <= set(listed)
            assert listed[f"user-{a}"]["muted"] is False

            # its own mute, then svc_users' mute command to the other gateway
            await ca.result("mute", {"muted": True})
            assert (await ca.notification("muted"))["params"] == {"userId": a, "muted": True}
            server_b = (await redis.get(UserKeys(prefix).conn_lock(b))).decode().partition(":")[0]
            command = records.UserCommand(
                room_id="room-j1", user_id=b, action=records.UserAction.MUTE, muted=True
            )
            reply = await bus.request(
                keys.gateway_users_subject(server_b), records.encode_record(command), timeout_s=5
            )
            assert json.loads(reply) == {"delivered": True}
            assert (await cb.notification("muted"))["params"] == {"userId": b, "muted": True}

            async def both_muted() -> bool:
                listed = await participants(janus_client, janus_room)
                return all(listed.get(f"user-{u}", {}).get("muted") for u in (a, b))

            await eventually(both_muted, 10, "both participants muted")
            assert await ca.result("icecandidate", {"candidate": None}) is None
            assert await ca.result("keepalive", {"status": "onair"}) is None

        # a reconnects (its socket closed without leave) and resumes its Janus session
        async with client(gw2, user_token(a, "room-j1")) as ca2:
            again = await ca2.result("join", join_params(jtoken=joined_a["jtoken"]))
            assert again["resume"] is True
            assert f"user-{a}" in await participants(janus_client, janus_room)
            assert await ca2.result("leave") is None
            assert (await ca2.closed())[0] == 1000

            async def a_gone() -> bool:
                return f"user-{a}" not in await participants(janus_client, janus_room)

            await eventually(a_gone, 10, "a left the AudioBridge room")
