"""The bus against a real nats-server: streams, dedup by message id, batches, micro services."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from common import keys
from common.bus import Bus, Message, NoResponders, stream_configs
from common.errors import Unavailable
from common.micro import serve_micro
from tests.servers import NatsServer, free_port


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    async with Bus.open([nats_server.url], name="test-bus") as b:
        yield b


async def test_streams_exist_with_documented_limits(bus: Bus) -> None:
    for config in stream_configs():
        info = await bus.js.stream_info(config.name)
        assert info.config.subjects == config.subjects
        assert info.config.max_msgs_per_subject == config.max_msgs_per_subject
    state = await bus.js.stream_info(keys.STATE_STREAM)
    assert state.config.duplicate_window >= 120


async def test_ensure_streams_is_idempotent_and_repairs_drift(bus: Bus) -> None:
    await bus.ensure_streams()
    drifted = (await bus.js.stream_info(keys.EVENTS_STREAM)).config
    drifted.max_msgs_per_subject = 5
    await bus.js.update_stream(drifted)
    await bus.ensure_streams()
    info = await bus.js.stream_info(keys.EVENTS_STREAM)
    assert info.config.max_msgs_per_subject == 1000


async def test_publish_deduplicates_by_message_id(bus: Bus) -> None:
    subject = "rtc.state.rooms.dedup-room.meta"
    first = await bus.publish(subject, b"{}", msg_id="/rooms/dedup-room/meta@41")
    again = await bus.publish(subject, b"{}", msg_id="/rooms/dedup-room/meta@41")
    other = await bus.publish(subject, b"{}", msg_id="/rooms/dedup-room/meta@42")
    assert not first.is_duplicate
    assert again.is_duplicate and again.seq == first.seq
    assert other.seq == first.seq + 1


async def test_publish_many_keeps_order_and_dedups(bus: Bus) -> None:
    msgs = [(f"rtc.state.rooms.batch-{i % 5}.meta", b"{}", f"batch@{i}") for i in range(200)]
    results = await bus.publish_many(msgs + msgs[:10])
    seqs = [r.seq for r in results[:200]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 200
    assert all(r.is_duplicate for r in results[200:])


async def test_connect_to_nothing_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        await Bus.connect([f"nats://127.0.0.1:{free_port()}"], name="nobody", connect_timeout_s=1)


async def test_reconnect_listener_runs_after_server_restart(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        async with Bus.open([server.url], name="reconnecting") as b:
            reconnected: list[bool] = []
            b.on_reconnect(lambda: reconnected.append(True))
            server.restart()
            for _ in range(100):
                if reconnected:
                    break
                await asyncio.sleep(0.1)
            assert reconnected == [True]
            assert (await b.publish("rtc.events.rooms.after-restart.migrated", b"{}")).seq >= 1
    finally:
        server.stop()


async def test_micro_service_answers_ping_info_stats_and_status(bus: Bus, nats_server: NatsServer) -> None:
    calls = 0

    def status() -> dict[str, object]:
        nonlocal calls
        calls += 1
        return {"rooms": 3, "isReady": True}

    async with serve_micro(
        bus,
        name="svc_test",
        version="0.1.0",
        description="test service",
        status=status,
        endpoints={"boom": lambda _d: 1 / 0},
    ):
        nc = await nats.connect(nats_server.url)
        try:
            ping = json.loads((await nc.request("$SRV.PING.svc_test", b"", timeout=2)).data)
            assert ping["name"] == "svc_test" and ping["version"] == "0.1.0"
            info = json.loads((await nc.request("$SRV.INFO.svc_test", b"", timeout=2)).data)
            assert {e["name"] for e in info["endpoints"]} == {"status", "boom"}
            reply = await nc.request("svc_test.status", b"", timeout=2)
            assert json.loads(reply.data) == {"rooms": 3, "isReady": True}
            assert calls == 1
            boom = await nc.request("svc_test.boom", b"", timeout=2)
            assert boom.headers is not None and boom.headers.get("Nats-Service-Error-Code") == "500"
            stats = json.loads((await nc.request("$SRV.STATS.svc_test", b"", timeout=2)).data)
            by_name = {e["name"]: e for e in stats["endpoints"]}
            assert by_name["status"]["num_requests"] == 1 and by_name["boom"]["num_errors"] == 1
        finally:
            await nc.close()


async def test_aclose_after_nats_went_away_does_not_raise(nats_private: NatsServer) -> None:
    # NATS gone first with bytes pending: nats-py's close() raises (ConnectionResetError on 3.11,
    # TypeError on 3.12 to 3.13.5, python/cpython#136234); aclose() must still close quietly.
    bus = await Bus.connect([nats_private.url], name="test-bus-gone", ensure_streams=False)
    nats_private.stop()
    for _ in range(50):
        if not bus.nc.is_connected:
            break
        await asyncio.sleep(0.05)
    await bus.nc.publish("rtc.test.pending", b"x")
    await bus.aclose()
    assert bus.nc.is_closed


async def test_request_reaches_a_queue_responder_and_no_responder_is_named(bus: Bus) -> None:
    seen: list[str] = []

    async def echo(msg: Message) -> None:
        seen.append(msg.subject)
        await msg.respond(b"re:" + msg.data)

    sub = await bus.subscribe("t.echo.*", echo, queue="echoers")
    try:
        assert await bus.request("t.echo.one", b"hi", timeout_s=2) == b"re:hi"
        assert seen == ["t.echo.one"]
    finally:
        await sub.unsubscribe()
    with pytest.raises(NoResponders) as info:
        await bus.request("t.echo.one", b"hi", timeout_s=2)
    assert info.value.fields["subject"] == "t.echo.one"


async def test_plain_subscription_sees_jetstream_publishes(bus: Bus) -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def collect(msg: Message) -> None:
        await got.put(msg.data)

    sub = await bus.subscribe("rtc.events.rooms.*.members", collect)
    try:
        await bus.publish("rtc.events.rooms.room-1.members", b'{"x":1}')
        assert await asyncio.wait_for(got.get(), 2) == b'{"x":1}'
    finally:
        await sub.unsubscribe()
