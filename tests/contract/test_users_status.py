"""Contract of rtc.users.status (core NATS request/reply): the batch a gateway sends validates,
svc_users (the responder) accepts it and its reply, one result per report (a refused one
among them), matches the contract's reply schema; a request that breaks the contract gets an
error reply."""

from __future__ import annotations

import json

from common.bus import ERROR_CODE_HEADER, Bus
from common.contracts import contract_for, strict_validator, validate_payload
from common.keys import Keyspace
from common.records import MemberStatus, UserStatusReport, UserStatusReports, encode_record
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
        unknown = "0b7e3a4c-5d6f-4a1b-8c2d-3e4f5a6b7c8d"
        request = encode_record(
            UserStatusReports(
                reports=[
                    UserStatusReport(
                        room_id="contract-st", user_id=user, status=MemberStatus.IDLE, gen=1, muted=False
                    ),
                    UserStatusReport(room_id="contract-st", user_id=unknown, status=MemberStatus.IDLE, gen=1),
                    UserStatusReport(room_id="contract-st", user_id=user, status=MemberStatus.IDLE, gen=1),
                ]
            )
        )
        contract = validate_payload("rtc.users.status", request)
        assert contract.name == "usersStatus" and contract.stream == "" and contract.reply is not None
        reply = json.loads(await bus.request("rtc.users.status", request, timeout_s=5))
        assert reply == {
            "ok": True,
            "results": [
                {"changed": True},
                {"error": "no such user in this room", "code": 404},
                {"changed": False},
            ],
        }
        strict_validator(contract_for("rtc.users.status").reply or {}).validate(reply)
        report = {"roomId": "contract-st", "userId": user, "status": "away", "gen": 1}
        broken = json.dumps({"reports": [report]}).encode()
        msg = await bus.nc.request("rtc.users.status", broken, timeout=5)
        assert msg.headers is not None and msg.headers[ERROR_CODE_HEADER] == "400"
        assert "status" in json.loads(msg.data)["error"]
