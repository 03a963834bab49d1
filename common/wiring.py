"""Wiring every service repeats: clients from settings, the module heartbeat, an HTTP server.

Only ``svc_*/app.py`` modules use this (docs/conventions.md, Package layout: app.py is wiring);
domain code never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from common import records
from common.bus import Bus
from common.config import EtcdSettings, NatsSettings, RedisSettings
from common.errors import AppError, Unavailable
from common.etcd import EtcdStore
from common.heartbeat import HeartbeatKeeper
from common.keys import Keyspace, StateKey
from common.state import StateStore

__all__ = [
    "REDIS_TIMEOUT_S",
    "ModuleHeartbeat",
    "etcd_reachable",
    "health_body",
    "instance_name",
    "keyspace_from",
    "metrics_payload",
    "open_bus",
    "open_etcd",
    "open_redis",
    "redis_reachable",
    "serve_http",
]

logger = logging.getLogger(__name__)

HTTP_START_TIMEOUT_S = 10.0
# A health check's own etcd read gives up after this long (the probe must answer quickly).
HEALTH_ETCD_TIMEOUT_S = 2.0
# Every Redis command gives up after this long (a request then answers 503 instead of hanging).
REDIS_TIMEOUT_S = 2.0


def keyspace_from(settings: EtcdSettings) -> Keyspace:
    return Keyspace(
        rooms=settings.prefix_rooms, januses=settings.prefix_januses, mixers=settings.prefix_mixers
    )


def open_etcd(settings: EtcdSettings) -> contextlib.AbstractAsyncContextManager[EtcdStore]:
    return EtcdStore.open(
        list(settings.endpoints),
        username=settings.username,
        password=settings.password,
        dial_timeout_s=settings.dial_timeout_s,
    )


def open_bus(settings: NatsSettings, *, name: str) -> contextlib.AbstractAsyncContextManager[Bus]:
    return Bus.open(
        list(settings.servers),
        name=name,
        connect_timeout_s=settings.connect_timeout_s,
        request_timeout_s=settings.request_timeout_s,
        drain_timeout_s=settings.drain_timeout_s,
    )


@contextlib.asynccontextmanager
async def open_redis(settings: RedisSettings) -> AsyncIterator[Redis]:
    """A redis.asyncio client (connections are made on first use, so a Redis that is down fails
    the calls, not the start). No retries inside redis-py: a failure reaches the caller at once
    (docs/conventions.md: retries live in the scheduler).

    The pool is a blocking one of ``REDIS_MAX_CONNECTIONS``: a burst of callers (a thousand
    gateway connections refreshing their locks) waits up to ``REDIS_TIMEOUT_S`` for a free
    connection; redis-py's default pool instead fails every call past 100 at once with "Too many
    connections".
    """
    host, port = split_addr(settings.addr)
    connection_class: type[Connection] = SSLConnection if settings.tls else Connection
    pool = BlockingConnectionPool(
        max_connections=settings.max_connections,
        connection_class=connection_class,
        timeout=REDIS_TIMEOUT_S,
        host=host,
        port=port,
        db=settings.db,
        username=settings.username or None,
        password=settings.password or None,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )
    client = Redis(connection_pool=pool)
    try:
        yield client
    finally:
        await client.aclose()
        await pool.disconnect()


def health_body(checks: Mapping[str, bool], fields: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """The ``/health`` answer of every service: 200 with ``"status": "ok"`` when every named
    check is true, else 503 with ``"status": "unavailable"``; ``checks`` and ``fields`` go in
    the body."""
    ok = all(checks.values())
    return (200 if ok else 503), {**fields, "status": "ok" if ok else "unavailable", "checks": dict(checks)}


def instance_name() -> str:
    """A durable consumer's name for a service without a module id: one per running process
    (each process keeps its own cache), unique and a valid NATS token."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:24]
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def redis_reachable(redis: Redis, *, timeout_s: float = REDIS_TIMEOUT_S) -> bool:
    """The ``redis`` health check: a PING answered within ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            return bool(await redis.ping())
    except (RedisError, TimeoutError, OSError):
        return False


async def etcd_reachable(etcd: EtcdStore, key: str, *, timeout_s: float = HEALTH_ETCD_TIMEOUT_S) -> bool:
    """The ``etcd`` health check: one get of ``key`` (absent is fine) answers within ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            await etcd.get(key)
    except (AppError, TimeoutError):
        return False
    return True


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host or "127.0.0.1", int(port)


class ModuleHeartbeat:
    """The ``/<collection>/<id>/heartbeat`` of a Janus manager or mixer, on a lease.

    Written through the state store, so the put is published at once; its deletion (shutdown
    revoke, or lease expiry after a crash) reaches NATS through the state relay.
    """

    def __init__(
        self,
        store: StateStore,
        *,
        collection: str,
        module_id: str,
        host: str,
        capacity: int,
        streams: Callable[[], int],
        ttl_s: float = 10.0,
    ) -> None:
        self._store = store
        self._skey = StateKey(collection, module_id, "heartbeat")
        self._host = host
        self._capacity = capacity
        self._streams = streams
        self._started_at = datetime.now(UTC)
        self._last_streams = -1
        self._keeper = HeartbeatKeeper(
            store.etcd, store.key(self._skey), self._value, ttl_s=ttl_s, put=self._put
        )

    def _value(self) -> bytes:
        return records.encode_record(
            records.Heartbeat(
                status=records.ModuleStatus.HEALTHY,
                host=self._host,
                capacity=self._capacity,
                streams=self._streams(),
                started_at=self._started_at,
            )
        )

    async def _put(self, key: str, value: bytes, lease: int) -> Any:
        return await self._store.put(
            self._skey, records.decode_record("heartbeat", value, key=key), lease=lease
        )

    @property
    def is_alive(self) -> bool:
        return self._keeper.is_alive

    async def streams_changed(self) -> None:
        """Re-put the heartbeat if the stream count moved (cheap to call after every reconcile)."""
        streams = self._streams()
        if streams != self._last_streams:
            self._last_streams = streams
            await self._keeper.update()

    async def __aenter__(self) -> ModuleHeartbeat:
        self._last_streams = self._streams()
        await self._keeper.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._keeper.aclose()


def metrics_payload() -> tuple[bytes, str]:
    """The Prometheus exposition of this process (body, content type)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class _InLoopServer(uvicorn.Server):
    """uvicorn inside a service's loop: common.lifecycle owns SIGTERM/SIGINT, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_http(app: Any, addr: str, *, name: str) -> AsyncIterator[uvicorn.Server]:
    """Run an ASGI app (litestar) with uvicorn inside this event loop until the block exits."""
    host, port = split_addr(addr)
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="on", loop="none"
    )
    server = _InLoopServer(config)
    # Bind here, not in uvicorn: it reports a taken port by exiting the process (SystemExit).
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then, and
    # without it every response waits ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise Unavailable(f"{name} cannot listen on {addr}: {exc.strerror}", addr=addr) from exc
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"http-{name}")
    try:
        async with asyncio.timeout(HTTP_START_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()
                    raise Unavailable(f"{name} HTTP server stopped while starting on {addr}", addr=addr)
                await asyncio.sleep(0.02)
    except BaseException:
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task
        sock.close()
        raise
    logger.info("%s listening on http://%s:%d", name, host, port)
    try:
        yield server
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
