"""Contract of rtc.gateway.{serverId}.users (core NATS request/reply): svc_users' kick and mute
requests to the gateway holding the user's lock validate and decode as UserCommand, and the
reply a gateway gives ({"delivered": bool}) matches the contract's reply schema."""

from __future__ import annotations

import json

from common.bus import Bus, Message
from common.contracts import strict_validator, validate_payload
from common.keys import Keyspace
from common.records import UserAction, UserCommand, decode_payload
from common.state import StateStore
from tests.contract.users_contract_helpers import users_with_room
from tests.servers import EtcdServer, NatsServer, RedisServer

REPLY = {"delivered": True}


async def test_user_commands_follow_the_contract(
    etcd_server: EtcdServer,
    nats_private: NatsServer,
    redis_server: RedisServer,
    keyspace: Keyspace,
    store: StateStore,
    bus: Bus,
) -> None:
    seen: list[Message] = []

    async def gateway(msg: Message) -> None:
        seen.append(msg)
        await msg.respond(json.dumps(REPLY).encode())

    sub = await bus.subscribe("rtc.gateway.*.users", gateway)
    try:
        async with users_with_room(
            "contract-gw",
            etcd_server=etcd_server,
            nats=nats_private,
            redis_server=redis_server,
            keyspace=keyspace,
            store=store,
        ) as (http, app):
            user = (await http.post("/api/rooms/contract-gw/users", json={"role": "anchor"})).json()["userID"]
            await app.store.client.set(app.store.keys.conn_lock(user), "gw-7f3a:conn-1", px=30_000)
            r = await http.post(f"/api/rooms/contract-gw/users/{user}/mute", json={"muted": True})
            assert r.json() == {"delivered": True}
            assert (await http.delete(f"/api/rooms/contract-gw/users/{user}")).status_code == 200
    finally:
        await sub.unsubscribe()
    assert [m.subject for m in seen] == ["rtc.gateway.gw-7f3a.users"] * 2
    commands = []
    for msg in seen:
        contract = validate_payload(msg.subject, msg.data)
        assert contract.name == "gatewayUsers" and contract.reply is not None
        strict_validator(contract.reply).validate(REPLY)
        commands.append(decode_payload(UserCommand, json.loads(msg.data)))
    assert [(c.action, c.muted) for c in commands] == [(UserAction.MUTE, True), (UserAction.KICK, None)]
