"""Wiring of svc_users: etcd, NATS, Redis, the reconcile runtime, the status responder, HTTP.

Start order: clients; the reconcile runtime on the rooms' ``meta`` (users of deleted rooms are
removed); the status expiry loop; the ``rtc.users.status`` responder (queue group
``svc_users``, so several instances share the reports); HTTP; the micro registration. Room
metas and livemetas are read from etcd per request (one small get each; no cache to
invalidate). ``running(config)`` yields the pieces (tests drive the expiry and the clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import attrs

from common import keys, records
from common.bus import Bus
from common.keys import StateKey
from common.micro import serve_micro
from common.reconcile import ReconcileRuntime, Target
from common.state import StateStore
from common.userkeys import UserKeys
from common.wiring import (
    etcd_reachable,
    instance_name,
    keyspace_from,
    open_bus,
    open_etcd,
    open_redis,
    redis_reachable,
    serve_http,
)
from svc_users.api import create_app
from svc_users.config import Config
from svc_users.members import MemberStore
from svc_users.reconcile import INTERESTS, ExpiryLoop, UsersReconciler
from svc_users.users import UserService
from svc_users.viewer import ViewerAccess

__all__ = ["SERVICE", "Users", "main", "running"]

logger = logging.getLogger(__name__)

SERVICE = "svc_users"
VERSION = "0.2.0"
QUEUE_GROUP = "svc_users"


@attrs.frozen(kw_only=True)
class Users:
    """Handles on a running svc_users (for tests)."""

    config: Config
    users: UserService
    store: MemberStore
    runtime: ReconcileRuntime
    expiry: ExpiryLoop
    bus: Bus


@contextlib.asynccontextmanager
async def running(config: Config, *, clock: Callable[[], float] = time.time) -> AsyncIterator[Users]:
    async with contextlib.AsyncExitStack() as stack:
        etcd = await stack.enter_async_context(open_etcd(config.etcd))
        bus = await stack.enter_async_context(open_bus(config.nats, name=SERVICE))
        redis = await stack.enter_async_context(open_redis(config.redis))
        keyspace = keyspace_from(config.etcd)
        state = StateStore(etcd, None, keyspace)

        async def livemeta(room_id: str) -> records.LiveMeta | None:
            found = await state.get(StateKey("rooms", room_id, "livemeta"))
            return None if found is None else found.record

        async def room(room_id: str) -> tuple[records.RoomMeta | None, records.LiveMeta | None]:
            meta = await state.get(StateKey("rooms", room_id, "meta"))
            if meta is None:
                return None, None
            return meta.record, await livemeta(room_id)

        async def meta_exists(room_id: str) -> bool:
            return await state.get(StateKey("rooms", room_id, "meta")) is not None

        async def publish(subject: str, payload: bytes) -> None:
            await bus.publish(subject, payload)

        async def request(subject: str, payload: bytes, timeout_s: float) -> bytes:
            return await bus.request(subject, payload, timeout_s=timeout_s)

        access = ViewerAccess(
            token_secret=config.viewer_token_secret,
            hls_key_secret=config.hls_key_secret,
            token_ttl_s=config.viewer_token_ttl_s,
            livemeta=livemeta,
        )
        store = MemberStore(
            redis,
            UserKeys(config.redis_user_svc_prefix),
            status_timeout_s=config.user_status_timeout_s,
            room_max_ttl_s=config.room_max_ttl_s,
        )
        users = UserService(
            store,
            room=room,
            publish=publish,
            request=request,
            api_token=config.api_token,
            jwt_secret=config.jwt_secret,
            jwt_ttl_s=config.jwt_expires_in_s,
            status_timeout_s=config.user_status_timeout_s,
            clock=clock,
        )
        reconciler = UsersReconciler(users, meta_exists)
        runtime = ReconcileRuntime(
            service=SERVICE,
            instance=instance_name(),
            etcd=etcd,
            bus=bus,
            keyspace=keyspace,
            interests=list(INTERESTS),
            reconcile=reconciler.reconcile,
        )
        await stack.enter_async_context(runtime)

        def enqueue(target: Target) -> None:
            runtime.enqueue(target)

        expiry = ExpiryLoop(users, runtime.cache, enqueue, interval_s=config.expiry_check_interval_s)
        await stack.enter_async_context(expiry)

        async def on_status(subject: str, data: bytes) -> bytes:
            return json.dumps(await users.report(data)).encode()

        await stack.enter_async_context(bus.respond(keys.USERS_STATUS_SUBJECT, on_status, queue=QUEUE_GROUP))

        def status() -> Mapping[str, Any]:
            return {"service": SERVICE}

        probe_key = state.key(StateKey("rooms", "health-probe", "livemeta"))

        async def health() -> Mapping[str, bool]:
            return {
                "nats": bus.is_connected,
                "etcd": await etcd_reachable(etcd, probe_key),
                "redis": await redis_reachable(redis),
                "reconciler": runtime.is_running,
                "expiry": expiry.is_running,
            }

        await stack.enter_async_context(
            serve_micro(
                bus,
                name=SERVICE,
                version=VERSION,
                description="identity and access: room users and their tokens, viewer tokens, HLS keys",
                status=status,
            )
        )
        await stack.enter_async_context(
            serve_http(create_app(access, users, health, status), config.http.addr, name=SERVICE)
        )
        logger.info("svc_users ready")
        yield Users(config=config, users=users, store=store, runtime=runtime, expiry=expiry, bus=bus)


async def main(config: Config, stop: asyncio.Event) -> None:
    async with running(config):
        await stop.wait()
