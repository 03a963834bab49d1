"""svc_users' /health over real servers: 200 with ``nats`` and ``etcd`` true, 503 naming
``nats`` while its NATS server is down, 200 again once it is back."""

from __future__ import annotations

import asyncio

import httpx

from common.keys import Keyspace
from tests.integration.eventcore import eventually
from tests.integration.svc_users.users_helpers import running_users
from tests.servers import LOOPBACK, EtcdServer, NatsServer, RedisServer


async def test_health_names_its_checks_and_fails_without_nats(
    etcd_server: EtcdServer, nats_private: NatsServer, redis_server: RedisServer, keyspace: Keyspace
) -> None:
    async with (
        running_users(
            etcd_endpoint=etcd_server.endpoint,
            nats_url=nats_private.url,
            redis_addr=f"{LOOPBACK}:{redis_server.port}",
            keyspace=keyspace,
            hls_key_secret="health-test-key-secret-0123456789abcdef",
        ) as url,
        httpx.AsyncClient(base_url=url, timeout=5) as http,
    ):
        r = await http.get("/health")
        assert r.status_code == 200
        assert r.json() == {
            "service": "svc_users",
            "status": "ok",
            "checks": {"nats": True, "etcd": True, "redis": True, "reconciler": True, "expiry": True},
        }

        await asyncio.to_thread(nats_private.stop)
        try:

            async def nats_down() -> bool:
                r = await http.get("/health")
                return r.status_code == 503 and r.json()["checks"] == {
                    "nats": False,
                    "etcd": True,
                    "redis": True,
                    "reconciler": True,
                    "expiry": True,
                }

            await eventually(nats_down, 15, "503 naming nats")
            assert (await http.get("/health")).json()["status"] == "unavailable"
        finally:
            await asyncio.to_thread(nats_private.start)

        async def recovered() -> bool:
            return (await http.get("/health")).status_code == 200

        await eventually(recovered, 20, "healthy again after NATS came back")
