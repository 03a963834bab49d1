"""svc_users in the test's event loop, pointed at test servers (used by svc_users and svc_mixer tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from common.keys import Keyspace
from svc_users.app import main as users_main
from svc_users.config import Config
from tests.servers import LOOPBACK, free_port

__all__ = ["VIEWER_TOKEN_SECRET", "running_users"]

VIEWER_TOKEN_SECRET = "test-viewer-token-secret-0123456789abcdef"
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123"


@contextlib.asynccontextmanager
async def running_users(
    *, etcd_endpoint: str, nats_url: str, keyspace: Keyspace, hls_key_secret: str, **env: str
) -> AsyncIterator[str]:
    """Run svc_users until the block ends; yields its base URL."""
    port = free_port()
    config = Config.from_env(
        {
            "HTTP_ADDR": f"{LOOPBACK}:{port}",
            "ETCD_ENDPOINTS": etcd_endpoint,
            "ETCD_PREFIX_ROOMS": keyspace.prefix("rooms"),
            "ETCD_PREFIX_JANUSES": keyspace.prefix("januses"),
            "ETCD_PREFIX_MIXERS": keyspace.prefix("mixers"),
            "NATS_SERVERS": nats_url,
            "JWT_SECRET": JWT_SECRET,
            "VIEWER_TOKEN_SECRET": VIEWER_TOKEN_SECRET,
            "HLS_KEY_SECRET": hls_key_secret,
            **env,
        }
    )
    url = f"http://{LOOPBACK}:{port}"
    stop = asyncio.Event()
    task = asyncio.create_task(users_main(config, stop), name="svc_users")
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(400):
                if task.done():
                    task.result()
                    raise RuntimeError("svc_users stopped while starting")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/health")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                raise TimeoutError("svc_users /health not ready after 20 s")
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
