"""Wiring of svc_users: etcd (room livemetas), NATS (micro registration), HTTP.

Only the HLS access part of the service exists so far (issue 5): viewer tokens and the key
endpoint. Livemetas are read from etcd per request (one small get; no cache to invalidate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from common import records
from common.keys import StateKey
from common.micro import serve_micro
from common.state import StateStore
from common.wiring import etcd_reachable, keyspace_from, open_bus, open_etcd, serve_http
from svc_users.api import create_app
from svc_users.config import Config
from svc_users.viewer import ViewerAccess

__all__ = ["main"]

logger = logging.getLogger(__name__)

VERSION = "0.1.0"


async def main(config: Config, stop: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
        etcd = await stack.enter_async_context(open_etcd(config.etcd))
        bus = await stack.enter_async_context(open_bus(config.nats, name="svc_users"))
        store = StateStore(etcd, None, keyspace_from(config.etcd))

        async def livemeta(room_id: str) -> records.LiveMeta | None:
            found = await store.get(StateKey("rooms", room_id, "livemeta"))
            return None if found is None else found.record

        access = ViewerAccess(
            token_secret=config.viewer_token_secret,
            hls_key_secret=config.hls_key_secret,
            token_ttl_s=config.viewer_token_ttl_s,
            livemeta=livemeta,
        )

        def status() -> Mapping[str, Any]:
            return {"service": "svc_users"}

        probe_key = store.key(StateKey("rooms", "health-probe", "livemeta"))

        async def health() -> Mapping[str, bool]:
            return {"nats": bus.is_connected, "etcd": await etcd_reachable(etcd, probe_key)}

        await stack.enter_async_context(
            serve_micro(
                bus,
                name="svc_users",
                version=VERSION,
                description="identity and access: viewer tokens, HLS keys",
                status=status,
            )
        )
        await stack.enter_async_context(
            serve_http(create_app(access, health, status), config.http.addr, name="svc_users")
        )
        logger.info("svc_users ready")
        await stop.wait()
