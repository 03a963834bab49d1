"""svc_users and svc_gateway together, both real, on a real Janus, NATS, etcd and Redis.

A user created over svc_users' REST API connects to the gateway, joins and offers; its status
reaches svc_users (the member list shows it connected); ``POST .../mute`` mutes the AudioBridge
participant through the gateway holding the user; ``DELETE .../users/{id}`` (kick) sends
``kicked``, closes the socket with 4403, and the same token is refused before the upgrade.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from common.state import StateStore
from tests.integration.eventcore import eventually
from tests.integration.svc_gateway.gw_helpers import (
    JWT_SECRET,
    PIN,
    client,
    participants,
    running_gateway,
    seed_room,
    ws_connect,
)
from tests.integration.svc_users.users_helpers import API_TOKEN, users_app
from tests.servers import LOOPBACK, EtcdServer, NatsServer, RedisServer
from tests.servers_janus import JanusServer

pytestmark = pytest.mark.janus

EnvFactory = Callable[..., dict[str, str]]
ROOM = "room-users-gw"


async def test_rest_user_joins_is_listed_muted_and_kicked(
    env: EnvFactory,
    prefix: str,
    store: StateStore,
    keyspace: Any,
    nats_private: NatsServer,
    etcd_server: EtcdServer,
    redis_server: RedisServer,
    janus_server: JanusServer,
    janus_client: Any,
    janus_room: int,
    offer: dict[str, str],
) -> None:
    await seed_room(store, ROOM, janus_room_id=janus_room, pin=PIN)
    async with (
        users_app(
            etcd_endpoint=etcd_server.endpoint,
            nats_url=nats_private.url,
            redis_addr=f"{LOOPBACK}:{redis_server.port}",
            keyspace=keyspace,
            hls_key_secret="k" * 32,
            REDIS_USER_SVC_PREFIX=prefix,
            JWT_SECRET=JWT_SECRET,
        ) as (users_url, _),
        running_gateway(env(JANUS_WS_PORT=str(janus_server.ws_port))) as gw,
        httpx.AsyncClient(base_url=users_url, timeout=5) as http,
    ):
        api = {"Authorization": f"Bearer {API_TOKEN}"}
        created = await http.post(
            f"/api/rooms/{ROOM}/users", json={"role": "anchor", "displayName": "Ada"}, headers=api
        )
        assert created.status_code == 200, created.text
        user_id, token = created.json()["userID"], created.json()["token"]

        async with client(gw, token) as anchor:
            joined = await anchor.result("join", {"clientId": str(uuid.uuid4()), "pin": PIN})
            assert joined["resume"] is False and joined["jtoken"]
            answer = (await anchor.result("offer", {"sdp": offer}))["sdp"]
            assert answer["type"] == "answer"
            await anchor.result("keepalive", {"status": "onair"})

            async def listed_onair() -> bool:
                r = await http.get(f"/api/rooms/{ROOM}/users", headers=api)
                members = {m["userId"]: m for m in r.json()["members"]}
                return bool(members.get(user_id, {}).get("status") == "onair")

            await eventually(listed_onair, 10, "svc_users lists the user on air")
            r = await http.get(f"/api/rooms/{ROOM}/users", headers=api)
            (member,) = r.json()["members"]
            assert member["connected"] is True and member["displayName"] == "Ada"

            # mute through svc_users -> the gateway holding the user -> AudioBridge
            muted = await http.post(
                f"/api/rooms/{ROOM}/users/{user_id}/mute", json={"muted": True}, headers=api
            )
            assert muted.status_code == 200 and muted.json() == {"delivered": True}
            assert (await anchor.notification("muted"))["params"] == {"userId": user_id, "muted": True}

            async def participant_muted() -> bool:
                listed = await participants(janus_client, janus_room)
                return bool(listed.get(f"user-{user_id}", {}).get("muted"))

            await eventually(participant_muted, 10, "the AudioBridge participant is muted")

            # kick: kicked notification, close 4403, out of the AudioBridge room
            kicked = await http.delete(f"/api/rooms/{ROOM}/users/{user_id}", headers=api)
            assert kicked.status_code == 200 and kicked.json() == {}
            await anchor.notification("kicked")
            assert (await anchor.closed())[0] == 4403

            async def participant_gone() -> bool:
                return f"user-{user_id}" not in await participants(janus_client, janus_room)

            await eventually(participant_gone, 10, "the kicked user left the AudioBridge room")

        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(gw, token):
                pass
        assert refused.value.response.status_code == 401
