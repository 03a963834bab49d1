"""Wiring of svc_gateway: etcd (room reads), NATS (status reports, fan-out, micro), Redis (locks,
heartbeat, generations), the Janus pool, and the WebSocket server.

Shutdown runs in reverse: the server closes every socket with 1001 (each handler releases its
lock on the way out), the micro registration and the NATS subscriptions go, the Janus pool
closes, the process heartbeat is deleted (so no lock of ours can block a user for its TTL),
then Redis, NATS and etcd close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from common.keys import StateKey
from common.micro import serve_micro
from common.state import StateStore
from common.userkeys import UserKeys
from common.wiring import etcd_reachable, keyspace_from, open_bus, open_etcd, open_redis, redis_reachable
from svc_gateway import jtoken
from svc_gateway.auth import Authenticator
from svc_gateway.config import Config
from svc_gateway.fanout import Fanout, Registry
from svc_gateway.janus_pool import JanusPool
from svc_gateway.lock import ConnectionLocks, ServerHeartbeat
from svc_gateway.methods import LegPool, Services
from svc_gateway.rooms import RoomDirectory
from svc_gateway.server import GatewayServer
from svc_gateway.users import StatusReporter, UserState

__all__ = ["main"]

logger = logging.getLogger(__name__)

VERSION = "0.1.0"


async def main(config: Config, stop: asyncio.Event, *, pool: LegPool | None = None) -> None:
    """Run the gateway until ``stop``; ``pool`` replaces the Janus pool (tests without Janus)."""
    server_id = uuid.uuid4().hex
    user_keys = UserKeys(config.redis_user_svc_prefix)
    async with contextlib.AsyncExitStack() as stack:
        etcd = await stack.enter_async_context(open_etcd(config.etcd))
        bus = await stack.enter_async_context(open_bus(config.nats, name="svc_gateway"))
        redis = await stack.enter_async_context(open_redis(config.redis))
        server_heartbeat = await stack.enter_async_context(
            ServerHeartbeat(redis, user_keys, server_id=server_id, ttl_s=config.server_heartbeat_ttl_s)
        )
        if pool is None:
            janus = JanusPool(
                ws_port=config.janus_ws_port,
                request_timeout_s=config.janus_request_timeout_s,
                keepalive_interval_s=config.janus_keepalive_interval_s,
            )
            stack.push_async_callback(janus.aclose)
            pool = janus
        store = StateStore(etcd, None, keyspace_from(config.etcd))
        locks = ConnectionLocks(redis, user_keys, server_id=server_id, ttl_s=config.conn_lock_ttl_s)
        reporter = StatusReporter(bus, timeout_s=config.users_request_timeout_s)
        services = Services(
            rooms=RoomDirectory(store),
            pool=pool,
            locks=locks,
            users=UserState(redis, user_keys),
            report=reporter.report,
            token_key=config.janus_token_key.encode(),
            encode_jtoken=jtoken.encode,
            decode_jtoken=jtoken.decode,
        )
        registry = Registry()
        await stack.enter_async_context(Fanout(bus, registry, server_id=server_id))
        probe_key = store.key(StateKey("rooms", "health-probe", "livemeta"))

        async def health() -> Mapping[str, bool]:
            return {
                "nats": bus.is_connected,
                "redis": await redis_reachable(redis),
                "etcd": await etcd_reachable(etcd, probe_key),
                "heartbeat": server_heartbeat.is_running,
            }

        def status() -> Mapping[str, Any]:
            return {"service": "svc_gateway", "serverId": server_id, "connections": len(registry)}

        await stack.enter_async_context(
            serve_micro(
                bus,
                name="svc_gateway",
                version=VERSION,
                description="anchors' WebSocket JSON-RPC signalling to Janus",
                status=status,
                metadata={"serverId": server_id},
            )
        )
        authenticator = Authenticator(
            secret=config.jwt_secret, allowed_origins=config.allowed_origins, redis=redis, keys=user_keys
        )
        server = GatewayServer(
            addr=config.ws_http.addr,
            ping_interval_s=config.ws_ping_interval_s,
            rate_per_s=config.ws_rate_per_s,
            rate_burst=config.ws_rate_burst,
            authenticator=authenticator,
            locks=locks,
            services=services,
            registry=registry,
            health=health,
        )
        await stack.enter_async_context(server)
        logger.info("svc_gateway ready (server id %s)", server_id)
        await stop.wait()
