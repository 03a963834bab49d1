"""Bad input gets a JSON-RPC error or a close with a clear code, never a crash, and never touches
another connection: after each case a second, joined connection of the same room still works."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from websockets.exceptions import ConnectionClosed

from common.state import StateStore
from tests.integration.svc_gateway.gw_helpers import (
    Client,
    FakePool,
    UsersStandIn,
    client,
    running_gateway,
    seed_room,
    seed_user,
    user_token,
)

EnvFactory = Callable[..., dict[str, str]]

# (what is sent, the error code and message expected back with its id)
ERROR_CASES: dict[str, tuple[Any, int, str, Any]] = {
    "malformed json": ('{"jsonrpc": "2.0", "id": 1, "method": ', -32700, "parse error", None),
    "batch": (
        '[{"jsonrpc": "2.0", "id": 1, "method": "keepalive"}]',
        -32600,
        "batch requests are not supported",
        None,
    ),
    "not an object": ("42", -32600, "invalid request", None),
    "unknown method": ({"jsonrpc": "2.0", "id": 5, "method": "fly"}, -32601, "method not found: fly", 5),
    "wrong params": (
        {"jsonrpc": "2.0", "id": "p", "method": "join", "params": {"clientId": 3}},
        -32602,
        "invalid join parameters",
        "p",
    ),
    "params not an object": (
        {"jsonrpc": "2.0", "id": 6, "method": "join", "params": "x"},
        -32600,
        "invalid request: params must be an object or an array",
        6,
    ),
    "method before join": (
        {"jsonrpc": "2.0", "id": 0, "method": "offer", "params": {}},
        -32600,
        "not joined yet",
        0,
    ),
    "method missing": ({"jsonrpc": "2.0", "id": 8}, -32600, "invalid request: method required", 8),
}


async def _still_works(other: Client) -> None:
    assert await other.result("keepalive", {"status": "idle"}) is None


@pytest.fixture
async def room(store: StateStore) -> str:
    await seed_room(store, "room-b1")
    return "room-b1"


@pytest.mark.parametrize("case", list(ERROR_CASES))
async def test_error_replies(
    case: str, env: EnvFactory, room: str, redis: Redis, prefix: str, users: UsersStandIn, pool: FakePool
) -> None:
    sent, code, message, rpc_id = ERROR_CASES[case]
    bad_uid = await seed_user(redis, prefix, room)
    good_uid = await seed_user(redis, prefix, room)
    async with (
        running_gateway(env(), pool=pool) as gw,
        client(gw, user_token(good_uid, room)) as other,
        client(gw, user_token(bad_uid, room)) as c,
    ):
        await other.result("join", {"clientId": str(uuid.uuid4()), "pin": "pin123"})
        await c.send(sent)
        reply = await c.reply()
        assert reply["error"]["code"] == code and reply["error"]["message"] == message, reply
        assert reply["id"] == rpc_id and reply["jsonrpc"] == "2.0"
        # the connection stays open and usable
        assert (await c.call("fly"))["error"]["code"] == -32601
        await _still_works(other)


async def test_notification_gets_no_reply_even_on_error(
    env: EnvFactory, room: str, redis: Redis, prefix: str, users: UsersStandIn, pool: FakePool
) -> None:
    uid = await seed_user(redis, prefix, room)
    async with running_gateway(env(), pool=pool) as gw, client(gw, user_token(uid, room)) as c:
        await c.send({"jsonrpc": "2.0", "method": "fly"})
        await c.send({"jsonrpc": "2.0", "id": None, "method": "offer"})
        reply = await c.call("fly")
        assert reply["id"] == 1  # the first reply is the request's: the notifications got none


@pytest.mark.parametrize(
    ("case", "expected_code"),
    [("binary frame", 1003), ("frame over 64 KiB", 1009), ("flood", 4429)],
)
async def test_closes(
    case: str,
    expected_code: int,
    env: EnvFactory,
    room: str,
    redis: Redis,
    prefix: str,
    users: UsersStandIn,
    pool: FakePool,
) -> None:
    bad_uid = await seed_user(redis, prefix, room)
    good_uid = await seed_user(redis, prefix, room)
    limits = {"WS_RATE_PER_S": "5", "WS_RATE_BURST": "10"}
    async with (
        running_gateway(env(**limits), pool=pool) as gw,
        client(gw, user_token(good_uid, room)) as other,
        client(gw, user_token(bad_uid, room), max_size=None) as c,
    ):
        await other.result("join", {"clientId": str(uuid.uuid4()), "pin": "pin123"})
        if case == "binary frame":
            await c.send(b"\x00\x01")
        elif case == "frame over 64 KiB":
            await c.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "fly", "params": ["x" * 70_000]}))
        else:
            started = time.monotonic()
            with contextlib.suppress(ConnectionClosed):  # the close may come before the last ones
                for i in range(200):
                    await c.send({"jsonrpc": "2.0", "id": i, "method": "fly"})
            sending_s = time.monotonic() - started
        code, _ = await c.closed()
        assert code == expected_code
        if case == "flood":
            codes = []
            while not c._replies.empty():
                codes.append(c._replies.get_nowait()["error"]["code"])
            # at most the burst runs, plus what the bucket refilled (5/s) while a slow machine
            # was still sending (their replies may be cut by the close: the reader refuses and
            # closes while the worker still runs the burst); the rest is refused, and once the
            # refusals' own bucket is empty the socket closes
            assert codes.count(-32601) <= 12 + 5 * sending_s
            assert codes.count(-32029) >= 5
        await _still_works(other)
        # the server is still up for new connections
        async with client(gw, user_token(bad_uid, room)) as again:
            assert (await again.call("fly"))["error"]["code"] == -32601
