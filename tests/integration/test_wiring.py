"""Service wiring against real servers: the module heartbeat and the in-loop HTTP server."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from litestar import Litestar, get

from common import records
from common.bus import Bus
from common.errors import Unavailable
from common.etcd import EtcdStore
from common.keys import Keyspace, StateKey
from common.state import StateStore
from common.wiring import ModuleHeartbeat, metrics_payload, serve_http
from tests.servers import free_port


async def test_module_heartbeat_is_published_and_follows_streams(
    etcd: EtcdStore, bus: Bus, keyspace: Keyspace
) -> None:
    store = StateStore(etcd, bus, keyspace)
    streams = 0
    sub = await bus.js.subscribe("rtc.state.mixers.mixer-w1.heartbeat", stream="RTC_STATE")
    try:
        async with ModuleHeartbeat(
            store,
            collection="mixers",
            module_id="mixer-w1",
            host="127.0.0.1",
            capacity=7,
            streams=lambda: streams,
            ttl_s=3,
        ) as hb:
            first = json.loads((await sub.next_msg(timeout=5)).data)
            assert first["op"] == "put" and first["value"]["capacity"] == 7 and first["value"]["streams"] == 0
            streams = 2
            await hb.streams_changed()
            second = json.loads((await sub.next_msg(timeout=5)).data)
            assert second["value"]["streams"] == 2
            got = await store.get(StateKey("mixers", "mixer-w1", "heartbeat"))
            assert got is not None and got.lease != 0
            assert got.record == records.decode_record("heartbeat", second["value"])
        assert await store.get(StateKey("mixers", "mixer-w1", "heartbeat")) is None
    finally:
        await sub.unsubscribe()


async def test_serve_http_runs_an_app_and_reports_a_taken_port() -> None:
    @get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app = Litestar([health])
    port = free_port()
    async with serve_http(app, f"127.0.0.1:{port}", name="test"):
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/health")
        assert r.json() == {"status": "ok"}
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) == 0
        with pytest.raises(Unavailable):
            async with serve_http(app, f"127.0.0.1:{port}", name="clash"):
                pass
    body, content_type = metrics_payload()
    assert content_type.startswith("text/plain") and b"python_info" in body
