"""Who may connect (HTTP statuses before the upgrade), /health and /metrics, and the one
connection per user lock, including its takeover after the holder's gateway is SIGKILLed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
from redis.asyncio import Redis
from websockets.exceptions import InvalidStatus

from common.state import StateStore
from common.userkeys import UserKeys
from tests.integration.eventcore import eventually
from tests.integration.svc_gateway.gw_helpers import (
    JWT_SECRET,
    ORIGIN,
    FakePool,
    RunningGateway,
    client,
    running_gateway,
    seed_room,
    seed_user,
    user_token,
    wait_listening,
    ws_connect,
)

EnvFactory = Callable[..., dict[str, str]]
ROOT = Path(__file__).resolve().parents[3]


async def _accepted(gw: RunningGateway, token: str) -> bool:
    """Connected and answered (not closed 4409)."""
    async with client(gw, token) as c:
        try:
            reply = await c.call("nope", timeout_s=1)
        except Exception:
            return False
        return bool(reply["error"]["code"] == -32601)


def _claims(uid: str, room: str, **override: object) -> dict[str, object]:
    now = int(time.time())
    return {
        "sub": uid,
        "roomId": room,
        "role": "anchor",
        "aud": "rtc-gateway",
        "iat": now,
        "exp": now + 600,
        **override,
    }


async def _status_of(gw: RunningGateway, token: str | None, **kwargs: object) -> int:
    try:
        async with ws_connect(gw, token, **kwargs):
            return 101
    except InvalidStatus as exc:
        assert exc.response.headers["Content-Type"] == "application/json"
        return exc.response.status_code


async def test_auth_table(
    env: EnvFactory, store: StateStore, redis: Redis, prefix: str, pool: FakePool
) -> None:
    await seed_room(store, "room-a1")
    uid = await seed_user(redis, prefix, "room-a1")
    kicked = await seed_user(redis, prefix, "room-a1")
    await redis.hdel(UserKeys(prefix).room_users("room-a1"), UserKeys(prefix).role_field(kicked))
    none_alg = jwt.encode(_claims(uid, "room-a1"), None, algorithm="none")
    cases = {
        "valid": (user_token(uid, "room-a1"), {}, 101),
        "valid, allowed origin": (user_token(uid, "room-a1"), {"origin": ORIGIN}, 101),
        "valid, bearer header": (
            None,
            {"additional_headers": {"Authorization": f"Bearer {user_token(uid, 'room-a1')}"}},
            101,
        ),
        "missing": (None, {}, 401),
        "expired": (jwt.encode(_claims(uid, "room-a1", exp=int(time.time()) - 5), JWT_SECRET), {}, 401),
        "forged": (user_token(uid, "room-a1", secret="another-secret-another-secret-0123456789"), {}, 401),
        "other room": (user_token(uid, "room-zz"), {}, 401),
        "wrong audience": (jwt.encode(_claims(uid, "room-a1", aud="hls"), JWT_SECRET), {}, 401),
        "alg none": (none_alg, {}, 401),
        "kicked": (user_token(kicked, "room-a1"), {}, 401),
        "bad origin": (user_token(uid, "room-a1"), {"origin": "http://evil.example"}, 403),
    }
    async with running_gateway(env(), pool=pool) as gw:
        for name, (token, kwargs, expected) in cases.items():
            assert await _status_of(gw, token, **kwargs) == expected, name
        async with httpx.AsyncClient(base_url=gw.http) as http:
            health = await http.get("/health")
            assert health.status_code == 200
            assert health.json()["checks"] == {"nats": True, "redis": True, "etcd": True, "heartbeat": True}
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200 and "gateway_connections" in metrics.text
            assert (await http.get("/nope")).status_code == 404
            refused = await http.get("/ws", headers={"Origin": "http://evil.example"})
            assert refused.status_code == 403 and refused.json()["reason"] == "origin"


async def test_second_connection_refused_4409(
    env: EnvFactory, store: StateStore, redis: Redis, prefix: str, pool: FakePool
) -> None:
    await seed_room(store, "room-l1")
    uid = await seed_user(redis, prefix, "room-l1")
    token = user_token(uid, "room-l1")
    async with running_gateway(env(), pool=pool) as gw:
        async with client(gw, token) as first:
            assert (await first.call("nope"))["error"]["code"] == -32601  # it holds the lock now
            async with client(gw, token) as second:
                code, reason = await second.closed()
                assert code == 4409 and reason and "live connection" in reason
            # the first one is untouched
            reply = await first.call("nope")
            assert reply["error"]["code"] == -32601
            lock = await redis.get(UserKeys(prefix).conn_lock(uid))
            assert lock is not None
        # released when the first one closed: a new connection is accepted
        await asyncio.sleep(0.2)
        assert await redis.get(UserKeys(prefix).conn_lock(uid)) is None
        async with client(gw, token) as third:
            assert (await third.call("nope"))["error"]["code"] == -32601


async def test_lock_taken_over_after_holder_gateway_sigkilled(
    env: EnvFactory, store: StateStore, redis: Redis, prefix: str, pool: FakePool, tmp_path: Path
) -> None:
    await seed_room(store, "room-l2")
    uid = await seed_user(redis, prefix, "room-l2")
    token = user_token(uid, "room-l2")
    other_env = env()
    log = (tmp_path / "gateway-b.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "svc_gateway"],
        env={**os.environ, "PYTHONPATH": str(ROOT), **other_env},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        addr = other_env["WS_HTTP_ADDR"]
        await wait_listening(addr)
        async with running_gateway(env(), pool=pool) as gw, ws_connect(f"ws://{addr}/ws", token):
            lock_key = UserKeys(prefix).conn_lock(uid)
            await eventually(lambda: redis.get(lock_key), 5, "gateway B holds the lock")
            other_server_id = (await redis.get(lock_key)).decode().partition(":")[0]
            # the holder's process lives: refused
            assert not await _accepted(gw, token)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
            killed_at = time.monotonic()
            # its heartbeat (TTL 3 s) expires, then the lock (TTL 30 s) is taken over
            while not await _accepted(gw, token):
                assert time.monotonic() - killed_at < 10, "lock never taken over"
                await asyncio.sleep(0.3)
            value = await redis.get(UserKeys(prefix).conn_lock(uid))
            assert value is None or not value.decode().startswith(other_server_id)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()
