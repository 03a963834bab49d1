"""svc_users with an on-air room, for the contract tests of the users' subjects."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx

from common import records
from common.keys import Keyspace, StateKey
from common.state import StateStore
from svc_users.app import Users
from tests.integration.svc_users.users_helpers import API_TOKEN, users_app
from tests.servers import LOOPBACK, EtcdServer, NatsServer, RedisServer

__all__ = ["API", "users_with_room"]

API = {"Authorization": f"Bearer {API_TOKEN}"}


@contextlib.asynccontextmanager
async def users_with_room(
    room_id: str,
    *,
    etcd_server: EtcdServer,
    nats: NatsServer,
    redis_server: RedisServer,
    keyspace: Keyspace,
    store: StateStore,
) -> AsyncIterator[tuple[httpx.AsyncClient, Users]]:
    now = datetime.now(UTC)
    meta = records.RoomMeta(pin="abc123", max_anchors=3, hls_path=f"{room_id}/s.m3u8", created_at=now)
    live = records.LiveMeta(
        status=records.LiveStatus.ONAIR, janus_id="janus-1", mixer_id="mixer-1", nonce="n", created_at=now
    )
    await store.put(StateKey("rooms", room_id, "meta"), meta)
    await store.put(StateKey("rooms", room_id, "livemeta"), live)
    async with (
        users_app(
            etcd_endpoint=etcd_server.endpoint,
            nats_url=nats.url,
            redis_addr=f"{LOOPBACK}:{redis_server.port}",
            keyspace=keyspace,
            hls_key_secret="contract-key-secret-0123456789abcdef",
        ) as (url, app),
        httpx.AsyncClient(base_url=url, headers=API, timeout=10) as http,
    ):
        yield http, app
