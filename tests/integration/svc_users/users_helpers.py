"""svc_users in the test's event loop, pointed at test servers (used by svc_users and svc_mixer tests)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx

from common.keys import Keyspace
from svc_users.app import Users, running
from svc_users.config import Config
from tests.servers import LOOPBACK, free_port

__all__ = ["API_TOKEN", "JWT_SECRET", "VIEWER_TOKEN_SECRET", "running_users", "users_app"]

VIEWER_TOKEN_SECRET = "test-viewer-token-secret-0123456789abcdef"
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123"
API_TOKEN = "test-api-token-0123456789abcdef0123456"


@contextlib.asynccontextmanager
async def users_app(
    *,
    etcd_endpoint: str,
    nats_url: str,
    redis_addr: str,
    keyspace: Keyspace,
    hls_key_secret: str,
    clock: Callable[[], float] = time.time,
    **env: str,
) -> AsyncIterator[tuple[str, Users]]:
    """Run svc_users until the block ends; yields its base URL and its running pieces. The Redis
    prefix is unique per call, so tests sharing the session Redis never see each other's users."""
    port = free_port()
    config = Config.from_env(
        {
            "HTTP_ADDR": f"{LOOPBACK}:{port}",
            "ETCD_ENDPOINTS": etcd_endpoint,
            "ETCD_PREFIX_ROOMS": keyspace.prefix("rooms"),
            "ETCD_PREFIX_JANUSES": keyspace.prefix("januses"),
            "ETCD_PREFIX_MIXERS": keyspace.prefix("mixers"),
            "NATS_SERVERS": nats_url,
            "REDIS_ADDR": redis_addr,
            "REDIS_USER_SVC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
            "API_TOKEN": API_TOKEN,
            "JWT_SECRET": JWT_SECRET,
            "VIEWER_TOKEN_SECRET": VIEWER_TOKEN_SECRET,
            "HLS_KEY_SECRET": hls_key_secret,
            **env,
        }
    )
    url = f"http://{LOOPBACK}:{port}"
    async with running(config, clock=clock) as users, httpx.AsyncClient(timeout=2) as client:
        r = await client.get(f"{url}/health")
        assert r.status_code == 200, r.text
        yield url, users


@contextlib.asynccontextmanager
async def running_users(
    *, etcd_endpoint: str, nats_url: str, redis_addr: str, keyspace: Keyspace, hls_key_secret: str, **env: str
) -> AsyncIterator[str]:
    """Run svc_users until the block ends; yields its base URL."""
    async with users_app(
        etcd_endpoint=etcd_endpoint,
        nats_url=nats_url,
        redis_addr=redis_addr,
        keyspace=keyspace,
        hls_key_secret=hls_key_secret,
        clock=time.time,
        **env,
    ) as (url, _users):
        yield url
