"""svc_janus' /health over real servers: every named check true while it can do its job, 503
with exactly the failing check false while its Janus or its NATS is down, 200 again once the
dependency is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.keys import Keyspace
from svc_janus.app import running
from svc_janus.config import Config
from tests.integration.eventcore import eventually
from tests.integration.svc_janus.janus_helpers import manager_env, unique_id
from tests.servers import EtcdServer, NatsServer, ServerProcess
from tests.servers_janus import JanusServer

pytestmark = pytest.mark.janus

CHECKS = {"nats", "etcd", "heartbeat", "janus", "reconciler", "monitor"}


@pytest.fixture
async def private_janus(tmp_path: Path) -> AsyncIterator[JanusServer]:
    janus = JanusServer(tmp_path / "janus")
    await asyncio.to_thread(janus.start)
    try:
        yield janus
    finally:
        await asyncio.to_thread(janus.stop)


async def _health(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    r = await http.get("/health")
    return r.status_code, r.json()


async def _only_failing(http: httpx.AsyncClient, check: str, server: ServerProcess) -> None:
    """Stop ``server``: 503 with exactly ``check`` false; start it: 200 again."""
    await asyncio.to_thread(server.stop)
    try:

        async def down() -> bool:
            status, body = await _health(http)
            return status == 503 and {k for k, ok in body["checks"].items() if not ok} == {check}

        await eventually(down, 15, f"503 naming {check} alone")
        assert (await _health(http))[1]["status"] == "unavailable"
    finally:
        await asyncio.to_thread(server.start)

    async def healthy() -> bool:
        return (await _health(http))[0] == 200

    await eventually(healthy, 20, f"healthy again after {check} came back")


@pytest.mark.parametrize("dependency", ["janus", "nats"])
async def test_health_names_its_checks_and_fails_without_a_dependency(
    dependency: str,
    private_janus: JanusServer,
    nats_private: NatsServer,
    etcd_server: EtcdServer,
    keyspace: Keyspace,
) -> None:
    config = Config.from_env(
        manager_env(
            private_janus,
            nats_url=nats_private.url,
            etcd_endpoint=etcd_server.endpoint,
            keyspace=keyspace,
            janus_id=unique_id("janus"),
        )
    )
    server: ServerProcess = private_janus if dependency == "janus" else nats_private
    async with (
        running(config),
        httpx.AsyncClient(base_url=f"http://{config.http.addr}", timeout=5) as http,
    ):
        status, body = await _health(http)
        assert status == 200 and body["status"] == "ok"
        assert body["checks"] == dict.fromkeys(CHECKS, True)
        assert body["service"] == "svc_janus" and body["janus"]["connected"] is True
        await _only_failing(http, dependency, server)
