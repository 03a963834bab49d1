"""The gateway's status reports over a real NATS: a burst goes out as few batched requests with
every report in it, a report refused on its own returns False (logged) while the others of its
batch return True, and a refused or unanswered request fails each of its reports."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest

from common import keys, records
from common.bus import Bus, Message
from common.records import MemberStatus, UserStatusReport
from svc_gateway.users import StatusReporter


def status(user_id: str, gen: int = 1) -> UserStatusReport:
    return UserStatusReport(room_id="room-r1", user_id=user_id, status=MemberStatus.ONAIR, gen=gen)


class Responder:
    """Answers like svc_users; ``refuse`` users get a 404 result, ``reply`` overrides the body."""

    def __init__(self) -> None:
        self.batches: list[list[UserStatusReport]] = []
        self.refuse: set[str] = set()
        self.reply: bytes | None = None

    async def on_request(self, msg: Message) -> None:
        batch = records.decode_payload(records.UserStatusReports, msg.data).reports
        self.batches.append(batch)
        results = [
            {"error": "no such user in this room", "code": 404}
            if r.user_id in self.refuse
            else {"changed": False}
            for r in batch
        ]
        await msg.respond(self.reply or json.dumps({"ok": True, "results": results}).encode())


async def test_a_burst_goes_out_batched_with_each_reports_answer(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    responder = Responder()
    sub = await bus.subscribe(keys.USERS_STATUS_SUBJECT, responder.on_request)
    await bus.nc.flush()
    reporter = StatusReporter(bus, timeout_s=5)
    try:
        users = [str(uuid.uuid4()) for _ in range(1200)]
        responder.refuse = {users[7]}
        with caplog.at_level(logging.WARNING, logger="svc_gateway.users"):
            taken = await asyncio.gather(*(reporter.report(status(u)) for u in users))
        assert taken == [u != users[7] for u in users]
        # every report reached the responder once, in order, in batches of at most 500
        sent = [r.user_id for batch in responder.batches for r in batch]
        assert sent == users
        assert 3 <= len(responder.batches) <= 6 and max(map(len, responder.batches)) == 500
        assert f"of user {users[7]}" in caplog.text and "no such user" in caplog.text
    finally:
        await reporter.aclose()
        await sub.unsubscribe()


async def test_a_refused_request_fails_each_of_its_reports(bus: Bus) -> None:
    responder = Responder()
    responder.reply = b'{"ok": false, "error": "Redis failed", "code": 503, "type": "Unavailable"}'
    sub = await bus.subscribe(keys.USERS_STATUS_SUBJECT, responder.on_request)
    await bus.nc.flush()
    reporter = StatusReporter(bus, timeout_s=5)
    try:
        assert (
            await asyncio.gather(*(reporter.report(status(str(uuid.uuid4()))) for _ in range(3)))
            == [False] * 3
        )
        responder.reply = b'{"ok": true, "results": []}'  # not one result per report
        assert await reporter.report(status(str(uuid.uuid4()))) is False
    finally:
        await reporter.aclose()
        await sub.unsubscribe()
    # nobody answers: the reports fail, nothing waits forever
    reporter = StatusReporter(bus, timeout_s=0.5)
    try:
        assert await reporter.report(status(str(uuid.uuid4()))) is False
    finally:
        await reporter.aclose()
