"""svc_users viewer tokens and the HLS key endpoint over real HTTP, with livemetas in real etcd."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import jwt
import pytest

from common import records
from common.hlskey import derive_hls_key
from common.keys import Keyspace, StateKey
from common.state import StateStore
from tests.integration.svc_users.users_helpers import VIEWER_TOKEN_SECRET, running_users
from tests.servers import LOOPBACK, EtcdServer, NatsServer, RedisServer

KEY_SECRET = "users-test-key-secret-0123456789abcdef"
NOW = datetime.now(UTC)


def _onair(nonce: str) -> records.LiveMeta:
    return records.LiveMeta(
        status=records.LiveStatus.ONAIR, janus_id="janus1", mixer_id="mixer1", nonce=nonce, created_at=NOW
    )


@pytest.fixture
async def http(
    etcd_server: EtcdServer, nats_private: NatsServer, redis_server: RedisServer, keyspace: Keyspace
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        running_users(
            etcd_endpoint=etcd_server.endpoint,
            nats_url=nats_private.url,
            redis_addr=f"{LOOPBACK}:{redis_server.port}",
            keyspace=keyspace,
            hls_key_secret=KEY_SECRET,
            VIEWER_TOKEN_TTL="2s",
        ) as url,
        httpx.AsyncClient(base_url=url, timeout=5) as client,
    ):
        yield client


async def _token(http: httpx.AsyncClient, room: str) -> str:
    r = await http.post("/api/token", json={"roomId": room})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expiresIn"] == 2
    token: str = body["token"]
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_only_for_onair_rooms(http: httpx.AsyncClient, store: StateStore) -> None:
    r = await http.post("/api/token", json={"roomId": "nosuch-room"})
    assert r.status_code == 404
    assert r.json()["success"] is False
    assert (await http.post("/api/token", json={"roomId": "a.b"})).status_code == 400
    assert (await http.post("/api/token", json={"roomId": "room-1", "extra": 1})).status_code == 400
    assert (await http.post("/api/token", content=b"")).status_code == 400
    await store.put(StateKey("rooms", "room-1", "livemeta"), _onair("n1"))
    claims = jwt.decode(
        await _token(http, "room-1"), VIEWER_TOKEN_SECRET, algorithms=["HS256"], audience="hls"
    )
    assert claims["roomId"] == "room-1"


async def test_key_endpoint_cases(http: httpx.AsyncClient, store: StateStore) -> None:
    await store.put(StateKey("rooms", "room-a", "livemeta"), _onair("nonce-a"))
    await store.put(StateKey("rooms", "room-b", "livemeta"), _onair("nonce-b"))
    token_a = await _token(http, "room-a")
    token_b = await _token(http, "room-b")
    url = "/hls/rooms/room-a/enc.key"

    r = await http.get(url, headers={**_bearer(token_a), "Origin": "http://player.example"})
    assert r.status_code == 200
    assert r.content == derive_hls_key(KEY_SECRET, "room-a", "nonce-a")
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["cache-control"] == "no-cache, no-store, must-revalidate"
    assert r.headers["pragma"] == "no-cache"
    assert r.headers["access-control-allow-origin"] == "*"
    preflight = await http.options(
        url,
        headers={
            "Origin": "http://player.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code in (200, 204)
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()

    assert (await http.get(url)).status_code == 401
    assert (await http.get(url, headers={"Authorization": "Basic eDp5"})).status_code == 401
    assert (await http.get(url, headers=_bearer("garbage"))).status_code == 403
    forged = jwt.encode(
        {"roomId": "room-a", "aud": "hls", "exp": int(time.time()) + 60},
        "not-the-secret-0123456789abcdef0123",
        algorithm="HS256",
    )
    assert (await http.get(url, headers=_bearer(forged))).status_code == 403
    other = await http.get(url, headers=_bearer(token_b))
    assert other.status_code == 403
    assert other.json()["error"] == "viewer token is for another room"
    assert (await http.get("/hls/rooms/a.b/enc.key", headers=_bearer(token_a))).status_code in (400, 404)

    # a restarted room (new nonce) gets its new key at once
    await store.put(StateKey("rooms", "room-a", "livemeta"), _onair("nonce-a2"))
    r = await http.get(url, headers=_bearer(token_a))
    assert r.content == derive_hls_key(KEY_SECRET, "room-a", "nonce-a2")

    # not on air any more: 404 for a valid token
    await store.delete(StateKey("rooms", "room-a", "livemeta"))
    assert (await http.get(url, headers=_bearer(token_a))).status_code == 404


async def test_expired_token_is_403(http: httpx.AsyncClient, store: StateStore) -> None:
    await store.put(StateKey("rooms", "room-x", "livemeta"), _onair("n"))
    token = await _token(http, "room-x")  # VIEWER_TOKEN_TTL=2s
    assert (await http.get("/hls/rooms/room-x/enc.key", headers=_bearer(token))).status_code == 200
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    # sleep until past exp (second resolution), no longer
    await asyncio.sleep(max(0.0, exp - time.time()) + 1.05)
    r = await http.get("/hls/rooms/room-x/enc.key", headers=_bearer(token))
    assert r.status_code == 403
    assert r.json()["error"] == "viewer token expired"
