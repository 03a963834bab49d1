"""Contract of rtc.users.status (core NATS request/reply): the request a gateway sends
validates, svc_users (the responder) accepts it and its reply matches the contract's reply
schema; a request that breaks the contract gets an error reply."""

from __future__ import annotations

import json

from common.bus import ERROR_CODE_HEADER, Bus
from common.contracts import contract_for, strict_validator, validate_payload
from common.keys import Keyspace
from common.records import MemberStatus, UserStatusReport, encode_record
from common.state import StateStore
from tests.contract.users_contract_helpers import users_with_room
from tests.servers import EtcdServer, NatsServer, RedisServer


async def test_status_request_and_reply_follow_the_contract(
    etcd_server: EtcdServer,
    nats_private: NatsServer,
    redis_server: RedisServer,
    keyspace: Keyspace,
    store: StateStore,
    bus: Bus,
) -> None:
    async with users_with_room(
        "contract-st",
        etcd_server=etcd_server,
        nats=nats_private,
        redis_server=redis_server,
        keyspace=keyspace,
        store=store,
    ) as (http, _app):
        user = (await http.post("/api/rooms/contract-st/users", json={"role": "anchor"})).json()["userID"]
        request = encode_record(
            UserStatusReport(
                room_id="contract-st", user_id=user, status=MemberStatus.IDLE, gen=1, muted=False
            )
        )
        contract = validate_payload("rtc.users.status", request)
        assert contract.name == "usersStatus" and contract.stream == "" and contract.reply is not None
        reply = json.loads(await bus.request("rtc.users.status", request, timeout_s=5))
        assert reply == {"ok": True, "changed": True}
        strict_validator(contract_for("rtc.users.status").reply or {}).validate(reply)
        broken = json.dumps({"roomId": "contract-st", "userId": user, "status": "away", "gen": 1}).encode()
        msg = await bus.nc.request("rtc.users.status", broken, timeout=5)
        assert msg.headers is not None and msg.headers[ERROR_CODE_HEADER] == "400"
        assert "status" in json.loads(msg.data)["error"]
