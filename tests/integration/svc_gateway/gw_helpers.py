"""Helpers of the gateway tests: rooms and users seeded in etcd and Redis, gateways run in this
process (or as a subprocess), a stand-in svc_users responder, and a fake Janus pool for the
tests that do not need a real Janus."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from common import keys, records
from common.bus import Bus, Message
from common.errors import Unavailable
from common.ids import new_user_id
from common.keys import Keyspace, StateKey
from common.records import MemberRole
from common.state import StateStore
from common.userkeys import UserKeys
from common.usertoken import issue_user_token
from svc_gateway.app import main
from svc_gateway.config import Config
from svc_janus.janus_ws import JanusClient
from tests.servers import LOOPBACK, EtcdServer, NatsServer, RedisServer, free_port

JWT_SECRET = "gateway-test-jwt-secret-0123456789"
TOKEN_KEY = "0123456789abcdef0123456789abcdef"
NONCE = "nonce-" + "ab" * 8
ORIGIN = "http://127.0.0.1:8080"
# the AudioBridge room of the real-Janus tests (conftest.janus_room)
PIN = "pin123"
SECRET = "gw-room-secret"


def gateway_env(
    *,
    nats: NatsServer,
    etcd: EtcdServer,
    redis: RedisServer,
    keyspace: Keyspace,
    prefix: str,
    port: int | None = None,
    janus_ws_port: int = 8188,
    **extra: str,
) -> dict[str, str]:
    env = {
        "NATS_SERVERS": nats.url,
        "ETCD_ENDPOINTS": etcd.endpoint,
        "ETCD_PREFIX_ROOMS": keyspace.rooms,
        "ETCD_PREFIX_JANUSES": keyspace.januses,
        "ETCD_PREFIX_MIXERS": keyspace.mixers,
        "REDIS_ADDR": f"{LOOPBACK}:{redis.port}",
        "REDIS_USER_SVC_PREFIX": prefix,
        "WS_HTTP_ADDR": f"{LOOPBACK}:{port or free_port()}",
        "JWT_SECRET": JWT_SECRET,
        "JANUS_TOKEN_KEY": TOKEN_KEY,
        "JANUS_WS_PORT": str(janus_ws_port),
        "ALLOWED_ORIGINS": f"{ORIGIN},http://localhost:8080",
        "APP_SHUTDOWN_TIMEOUT": "5s",
        "JANUS_REQUEST_TIMEOUT": "5s",
    }
    env.update(extra)
    return env


class RunningGateway:
    def __init__(self, config: Config, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        self.config = config
        self.task = task
        self.stop = stop

    @property
    def url(self) -> str:
        return f"ws://{self.config.ws_http.addr}/ws"

    @property
    def http(self) -> str:
        return f"http://{self.config.ws_http.addr}"


async def wait_listening(
    addr: str, *, timeout_s: float = 15.0, task: asyncio.Task[Any] | None = None
) -> None:
    host, _, port = addr.rpartition(":")
    async with asyncio.timeout(timeout_s):
        while True:
            if task is not None and task.done():
                task.result()
                raise AssertionError("gateway stopped while starting")
            try:
                _, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return


@contextlib.asynccontextmanager
async def running_gateway(env: dict[str, str], *, pool: Any = None) -> AsyncIterator[RunningGateway]:
    config = Config.from_env(env)
    stop = asyncio.Event()
    task = asyncio.create_task(main(config, stop, pool=pool))
    try:
        await wait_listening(config.ws_http.addr, task=task)
        yield RunningGateway(config, task, stop)
    finally:
        stop.set()
        async with asyncio.timeout(15):
            await task


async def seed_room(
    store: StateStore,
    room_id: str,
    *,
    janus_id: str = "janus-gw1",
    host: str = LOOPBACK,
    janus_room_id: int | None = 4242,
    pin: str = "pin123",
    onair: bool = True,
) -> None:
    now = datetime.now(UTC)
    await store.put(
        StateKey("rooms", room_id, "meta"),
        records.RoomMeta(pin=pin, max_anchors=5, hls_path=f"{room_id}/stream.m3u8", created_at=now),
    )
    live = records.LiveMeta(
        status=records.LiveStatus.ONAIR,
        janus_id=janus_id,
        mixer_id="mixer-gw1",
        nonce=NONCE,
        generation=1,
        created_at=now,
    )
    if not onair:
        live = records.LiveMeta(
            status=records.LiveStatus.REMOVING,
            janus_id="",
            mixer_id="",
            nonce="",
            generation=1,
            created_at=now,
            discard_at=now,
        )
    await store.put(StateKey("rooms", room_id, "livemeta"), live)
    if janus_room_id is not None:
        await store.put(
            StateKey("rooms", room_id, "janus"),
            records.JanusRecord(
                janus_id=janus_id,
                janus_room_id=janus_room_id,
                status=records.JanusStatus.FORWARDING,
                generation=1,
                updated_at=now,
            ),
        )
    await store.put(
        StateKey("januses", janus_id, "heartbeat"),
        records.Heartbeat(
            status=records.ModuleStatus.HEALTHY, host=host, capacity=10, streams=0, started_at=now
        ),
    )


async def seed_user(
    redis: Redis, prefix: str, room_id: str, *, role: MemberRole = MemberRole.ANCHOR, muted: bool = False
) -> str:
    uk = UserKeys(prefix)
    user_id = new_user_id()
    await redis.hset(uk.room_users(room_id), uk.role_field(user_id), role.value)
    if muted:
        await redis.hset(uk.room_users(room_id), uk.muted_field(user_id), "1")
    return user_id


def user_token(user_id: str, room_id: str, *, ttl_s: float = 600, secret: str = JWT_SECRET) -> str:
    token, _ = issue_user_token(secret, user_id=user_id, room_id=room_id, role=MemberRole.ANCHOR, ttl_s=ttl_s)
    return token


def ws_connect(gw: RunningGateway | str, token: str | None, **kwargs: Any) -> Any:
    url = gw if isinstance(gw, str) else gw.url
    if token is not None:
        url = f"{url}?token={token}"
    return connect(url, open_timeout=5, close_timeout=3, **kwargs)


class Client:
    """A JSON-RPC client over one websockets connection; notifications are kept apart."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.notifications: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._next = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                msg = json.loads(raw)
                if "method" in msg:
                    await self.notifications.put(msg)
                else:
                    await self._replies.put(msg)

    async def send(self, message: Any) -> None:
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def reply(self, timeout_s: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            return await self._replies.get()

    async def call(self, method: str, params: Any = None, *, timeout_s: float = 10) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next, "method": method}
        if params is not None:
            msg["params"] = params
        await self.send(msg)
        reply = await self.reply(timeout_s)
        assert reply.get("id") == self._next, reply
        return reply

    async def result(self, method: str, params: Any = None, *, timeout_s: float = 10) -> Any:
        reply = await self.call(method, params, timeout_s=timeout_s)
        assert "error" not in reply, reply
        return reply["result"]

    async def notification(self, method: str, timeout_s: float = 10) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                msg = await self.notifications.get()
                if msg["method"] == method:
                    return msg

    async def closed(self, timeout_s: float = 10) -> tuple[int | None, str | None]:
        async with asyncio.timeout(timeout_s):
            await self.ws.wait_closed()
            await self._reader
        rcvd = self.ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd is not None else (None, None)

    async def aclose(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def client(gw: RunningGateway | str, token: str, **kwargs: Any) -> AsyncIterator[Client]:
    async with ws_connect(gw, token, **kwargs) as ws:
        c = Client(ws)
        try:
            yield c
        finally:
            await c.aclose()


class UsersStandIn:
    """The test's own responder on ``rtc.users.status`` (what svc_users answers): each report of
    a batch is queued, in order, and every one answered as taken."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self.reports: asyncio.Queue[records.UserStatusReport] = asyncio.Queue()
        self._sub: Any = None

    async def __aenter__(self) -> UsersStandIn:
        async def on_report(msg: Message) -> None:
            batch = records.decode_payload(records.UserStatusReports, msg.data)
            for report in batch.reports:
                await self.reports.put(report)
            results = [{"changed": True}] * len(batch.reports)
            await msg.respond(json.dumps({"ok": True, "results": results}).encode())

        self._sub = await self._bus.subscribe(keys.USERS_STATUS_SUBJECT, on_report, queue="svc_users")
        await self._bus.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._sub.unsubscribe()

    async def next(self, timeout_s: float = 10) -> records.UserStatusReport:
        async with asyncio.timeout(timeout_s):
            return await self.reports.get()


class FakeLeg:
    """svc_gateway.janus_pool.AnchorLeg's surface, recording calls."""

    def __init__(self, session_id: int, handle_id: int, janus_id: str) -> None:
        self.session_id = session_id
        self.handle_id = handle_id
        self.janus_id = janus_id
        self.on_event: Any = None
        self.calls: list[tuple[str, Any]] = []
        self.join_delay_s = 0.0
        self.leave_delay_s = 0.0
        self.fail: set[str] = set()
        self.released = False

    def _call(self, name: str, arg: Any = None) -> None:
        self.calls.append((name, arg))
        if name in self.fail:
            raise Unavailable(f"fake janus {name} failed")

    async def join(
        self, *, room: int, pin: str, display: str, muted: bool, offer: dict[str, Any]
    ) -> dict[str, Any]:
        self._call("join", {"room": room, "pin": pin, "display": display, "muted": muted, "offer": offer})
        await asyncio.sleep(self.join_delay_s)
        return {"type": "answer", "sdp": "v=0 fake answer"}

    async def trickle(self, candidate: dict[str, Any] | None) -> None:
        self._call("trickle", candidate)

    async def keepalive(self) -> None:
        self._call("keepalive")

    async def configure(self, *, muted: bool) -> None:
        self._call("configure", muted)

    async def leave(self) -> None:
        self._call("leave")
        await asyncio.sleep(self.leave_delay_s)
        self.calls.append(("left", None))

    def release(self) -> None:
        self.released = True


class FakePool:
    def __init__(self) -> None:
        self.legs: list[FakeLeg] = []
        self.opened: list[dict[str, Any]] = []
        self.join_delay_s = 0.0
        self._next = 1000

    async def open_leg(self, *, janus_id: str, host: str, resume: tuple[int, int] | None) -> tuple[Any, bool]:
        self.opened.append({"janus_id": janus_id, "host": host, "resume": resume})
        if resume is not None:
            leg = FakeLeg(resume[0], resume[1], janus_id)
            resumed = True
        else:
            self._next += 1
            leg = FakeLeg(self._next, self._next + 500, janus_id)
            resumed = False
        leg.join_delay_s = self.join_delay_s
        self.legs.append(leg)
        return leg, resumed

    @staticmethod
    def participant_user(display: str) -> str | None:
        return display.removeprefix("user-") if display.startswith("user-") else None

    async def aclose(self) -> None:
        pass


def new_prefix() -> str:
    return f"gw{uuid.uuid4().hex[:8]}"


async def participants(janus_client: JanusClient, room: int) -> dict[str, dict[str, Any]]:
    data = await janus_client.message({"request": "listparticipants", "room": room})
    return {p["display"]: p for p in data.get("participants", [])}
