"""Fixtures of the svc_users room-user tests: the service with an injected clock, an HTTP client,
on-air rooms in etcd, and a way to see the members events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import attrs
import httpx
import pytest

from common import records
from common.bus import Bus, Message
from common.keys import Keyspace, StateKey
from common.state import StateStore
from svc_users.app import Users
from tests.integration.svc_users.users_helpers import users_app
from tests.servers import LOOPBACK, EtcdServer, NatsServer, RedisServer

NOW = datetime.now(UTC)


@attrs.define
class FakeClock:
    now: float = attrs.field(factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@attrs.define
class Svc:
    url: str
    app: Users
    http: httpx.AsyncClient
    clock: FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def svc(
    etcd_server: EtcdServer,
    nats_private: NatsServer,
    redis_server: RedisServer,
    keyspace: Keyspace,
    clock: FakeClock,
) -> AsyncIterator[Svc]:
    async with (
        users_app(
            etcd_endpoint=etcd_server.endpoint,
            nats_url=nats_private.url,
            redis_addr=f"{LOOPBACK}:{redis_server.port}",
            keyspace=keyspace,
            hls_key_secret="users-test-key-secret-0123456789abcdef",
            clock=clock,
            EXPIRY_CHECK_INTERVAL="1h",  # the tests run the expiry passes themselves
        ) as (url, app),
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        yield Svc(url=url, app=app, http=http, clock=clock)


OnAir = Callable[..., Awaitable[None]]


@pytest.fixture
def onair(store: StateStore) -> OnAir:
    """``await onair("room-1", pin="abc123", max_anchors=3)``: meta and an onair livemeta."""

    async def make(room_id: str, *, pin: str = "abc123", max_anchors: int = 3, live: bool = True) -> None:
        meta = records.RoomMeta(
            pin=pin, max_anchors=max_anchors, hls_path=f"{room_id}/s.m3u8", created_at=NOW
        )
        await store.put(StateKey("rooms", room_id, "meta"), meta)
        if live:
            livemeta = records.LiveMeta(
                status=records.LiveStatus.ONAIR,
                janus_id="janus-1",
                mixer_id="mixer-1",
                nonce="n0nce",
                created_at=NOW,
            )
            await store.put(StateKey("rooms", room_id, "livemeta"), livemeta)

    return make


@attrs.define
class MemberEvents:
    queue: asyncio.Queue[tuple[str, records.RoomMembers, bytes]]

    async def until(
        self, check: Callable[[records.RoomMembers], bool], within_s: float = 5.0
    ) -> records.RoomMembers:
        async with asyncio.timeout(within_s):
            while True:
                _subject, event, _raw = await self.queue.get()
                if check(event):
                    return event


@pytest.fixture
async def member_events(bus: Bus) -> AsyncIterator[MemberEvents]:
    queue: asyncio.Queue[tuple[str, records.RoomMembers, bytes]] = asyncio.Queue()

    async def collect(msg: Message) -> None:
        await queue.put((msg.subject, records.decode_payload(records.RoomMembers, msg.data), msg.data))

    sub = await bus.subscribe("rtc.events.rooms.*.members", collect)
    try:
        yield MemberEvents(queue)
    finally:
        await sub.unsubscribe()
