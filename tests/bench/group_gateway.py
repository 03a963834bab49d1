"""`just bench gateway`: svc_gateway with real NATS, etcd, Redis, Janus and svc_users.

The whole stack runs as `just up` runs it (infra/stack.py on free ports in a temp dir), its
Janus gathering ICE candidates only on a veth of a client network namespace the bench creates
(tests/e2e/netns.py: WebRTC needs a non-loopback link; this needs root, like the end-to-end
test). The bench starts its own gateway processes (``python -m svc_gateway``) pointed at the
stack's servers, so the process measured is exactly one and nothing else connects to it.

- join_to_answer_ms_p50/p99: an aiortc anchor in the client namespace (a ``bench`` mode
  tests/e2e/anchor_client.py subprocess) times connect + ``join`` + ``offer`` -> answer for
  ``JOINS`` users one after the other, in a room created through svc_rooms (so svc_janus made
  its AudioBridge room). The offer is created and gathered before the clock starts (ICE
  gathering is the client's own work); each user is created through svc_users' REST API, joins,
  checks ICE connects, then ``leave``s before the next.
- gateway_kib_per_conn: ``CONNS`` connections, each joined (its own Janus session and handle)
  and sending ``keepalive {status: onair}`` every ``IDLE_KEEPALIVE_S``: the gateway's RSS after
  they settle minus its RSS with one such connection, per connection.
- gateway_keepalives_per_s: the same connections then send keepalives back to back (one in
  flight per connection, at most ``PER_CONN_RATE`` per second each, under the gateway's
  per-connection rate limit): keepalive replies per second over ``RATE_WINDOW_S``. Each one is a
  Janus session keepalive, a Redis lock refresh and a status report to svc_users over NATS.
  Everything shares the machine (2 cores here), so the CPU split is reported too (% of one
  core of the gateway, svc_users and this client while keepalives run) and
  gateway_keepalives_per_core_s = keepalives/s divided by the gateway's share of a core.

The ``CONNS`` users are written straight into Redis with the shared key layout
(common/userkeys.py: the room hash's ``m:``/``t:``/``n:`` fields, as svc_users writes them) and
get tokens signed with the stack's JWT secret (common/usertoken.py, what svc_users issues):
svc_users' REST API would refuse more than 5 users per room (maxAnchors), and this is the same
data the gateway reads. Their ``ROOMS`` rooms (``CONNS / ROOMS`` users each, like real rooms)
live in a cell of their own (tests/e2e/gateway_proc.py ``Cell``): rooms written to etcd under
another key prefix (meta, livemeta on air, and a copy of the real Janus's heartbeat), users
under another Redis prefix, a NATS of its own, and a svc_users and the measured gateway on
them. So the stack's svc_rooms, svc_janus and svc_mixer never see these rooms (no AudioBridge
rooms or FFmpegs: a join opens a Janus session and handle and needs nothing else), while every
keepalive still does its real work against the real Janus, Redis and a real svc_users.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import websockets
from redis.asyncio import Redis

from common.etcd import EtcdStore
from common.keys import Keyspace
from common.records import MemberRole
from common.state import StateStore
from common.userkeys import UserKeys
from common.usertoken import issue_user_token
from tests.e2e.anchor_client import AnchorProcess
from tests.e2e.gateway_proc import Cell, Gateway, Users
from tests.e2e.netns import VethNamespace, can_admin_network
from tests.integration.svc_janus.janus_helpers import live_room
from tests.servers import NatsServer
from tests.stackutil import Stack

__all__ = ["GOALS", "run"]

GOALS = {
    "join_to_answer_ms_p50": "<= 300",
    "join_to_answer_ms_p99": "<= 300",
    "gateway_kib_per_conn": "<= 64",
    # the issue's "keepalives per second on one core": the rate over the gateway's CPU share, since
    # on this 2-core machine the gateway shares the cores with svc_users, Redis, Janus and the load
    # client (gateway_keepalives_per_s is the raw rate, reported with no goal)
    "gateway_keepalives_per_core_s": ">= 5000",
}

JOINS = 60
CONNS = 1000
ROOMS = 200
IDLE_KEEPALIVE_S = 5.0
SETTLE_S = 8.0
PER_CONN_RATE = 15.0
RATE_WARMUP_S = 2.0
RATE_WINDOW_S = 10.0
JOIN_CONCURRENCY = 40
BENCH_PREFIX = "/bench-gw/"
BENCH_REDIS_PREFIX = "rtcbench"
PIN = "bench1"
JANUS_ID = "janus1"  # infra/components/31-svc_janus.toml
ROOT = Path(__file__).resolve().parents[2]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextlib.asynccontextmanager
async def _stack(tmp: Path) -> AsyncIterator[tuple[Stack, VethNamespace]]:
    allowed, why = can_admin_network()
    if not allowed:
        raise RuntimeError(f"the gateway bench {why}")
    ns = await asyncio.to_thread(VethNamespace.create)
    s = Stack(tmp / "stack", {"JANUS_ICE_ENFORCE_LIST": ns.server_if})
    try:
        await asyncio.to_thread(s.up)
        yield s, ns
    finally:
        await asyncio.to_thread(s.cleanup)
        await asyncio.to_thread(ns.delete)


# -- join_to_answer --------------------------------------------------------------------------


async def _join_to_answer(s: Stack, ns: VethNamespace, tmp: Path) -> dict[str, float]:
    rooms = f"http://127.0.0.1:{s.port('SVC_ROOMS_PORT')}"
    users = f"http://127.0.0.1:{s.port('SVC_USERS_PORT')}"
    api = {"Authorization": f"Bearer {(s.run_dir / 'api-token').read_text().strip()}"}
    room = "bench-gw-join"
    async with (
        httpx.AsyncClient(timeout=10) as http,
        Gateway(s, tmp / "gateway-join.log", log_level="WARNING") as gw,
    ):
        r = await http.post(f"{rooms}/api/rooms", json={"roomId": room, "pin": PIN}, headers=api)
        r.raise_for_status()
        deadline = time.monotonic() + 20
        while True:
            body = (await http.get(f"{rooms}/api/rooms/{room}")).json().get("room", {})
            if body.get("janus", {}).get("state") == "forwarding":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"room {room} never forwarding: {body}")
            await asyncio.sleep(0.2)
        anchor = await AnchorProcess("bench", ["--netns", ns.name, "bench"]).start()
        times: list[float] = []
        try:
            for i in range(JOINS):
                made = await http.post(
                    f"{users}/api/rooms/{room}/users", json={"role": "anchor"}, headers=api
                )
                if made.status_code != 200:
                    members = (await http.get(f"{users}/api/rooms/{room}/users", headers=api)).text
                    raise RuntimeError(f"user {i}: {made.status_code} {made.text}; members {members}")
                mark = len(anchor.events)
                await anchor.send(
                    {
                        "cmd": "join_once",
                        "url": f"{gw.url}?token={made.json()['token']}",
                        "clientId": str(uuid.uuid4()),
                        "pin": PIN,
                    }
                )
                done = await anchor.wait_for("join_once", after=mark, timeout_s=30)
                if i > 0:  # the first join loads code and opens the Janus connection
                    times.append(float(done["ms"]))
        finally:
            await anchor.stop()
        await http.delete(f"{rooms}/api/rooms/{room}", headers=api)
    return {
        "join_to_answer_ms_p50": round(statistics.median(times), 2),
        "join_to_answer_ms_p99": round(_pct(times, 0.99), 2),
    }


# -- many connections ------------------------------------------------------------------------


async def _bench_rooms(s: Stack) -> list[str]:
    """ROOMS on-air rooms under BENCH_PREFIX on the stack's Janus (only our gateway reads them)."""
    async with EtcdStore.open([f"127.0.0.1:{s.port('ETCD_PORT')}"]) as etcd:
        # the stack's svc_janus (JANUS_ID janus1) keeps its Janus's heartbeat under /januses/
        beat = await etcd.get(Keyspace().module_key("januses", JANUS_ID, "heartbeat"))
        if beat is None:
            raise RuntimeError("the stack's Janus has no heartbeat in etcd")
        bench = Keyspace.under(BENCH_PREFIX)
        await etcd.put(bench.module_key("januses", JANUS_ID, "heartbeat"), beat.value)
        store = StateStore(etcd, None, bench)
        room_ids = [f"bench-gw-{i:03d}" for i in range(ROOMS)]
        for room_id in room_ids:
            await live_room(store, room_id, janus_id=JANUS_ID, mixer_id="bench-none", pin=PIN)
    return room_ids


async def _bench_users(s: Stack, gw: Gateway, room_ids: list[str]) -> list[tuple[str, str]]:
    """CONNS users spread over the rooms, written as svc_users writes them: (room, token)."""
    out = []
    keys = UserKeys(BENCH_REDIS_PREFIX)
    now_ms = str(int(time.time() * 1000))
    redis = Redis(host="127.0.0.1", port=s.port("REDIS_PORT"))
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(CONNS):
                room_id = room_ids[i % len(room_ids)]
                user_id = str(uuid.uuid4())
                pipe.hset(
                    keys.room_users(room_id),
                    mapping={
                        keys.role_field(user_id): MemberRole.ANCHOR.value,
                        keys.created_field(user_id): now_ms,
                        keys.name_field(user_id): f"bench {i}",
                    },
                )
                pipe.hset(keys.rooms, room_id, now_ms)
                token, _ = issue_user_token(
                    gw.jwt_secret, user_id=user_id, room_id=room_id, role=MemberRole.ANCHOR, ttl_s=3600
                )
                out.append((room_id, token))
            await pipe.execute()
    finally:
        await redis.aclose()
    return out


class Client:
    """One authenticated, joined connection sending keepalives."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: websockets.ClientConnection | None = None
        self._ids = 0
        self.replies = 0
        self.errors = 0

    async def call(self, method: str, params: Any) -> Any:
        assert self.ws is not None
        self._ids += 1
        rid = self._ids
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == rid:
                break  # notifications (roomStatus) in between are skipped
        if "error" in msg:
            self.errors += 1
            raise RuntimeError(f"{method}: {msg['error']}")
        self.replies += 1
        return msg.get("result")

    async def open(self) -> None:
        self.ws = await websockets.connect(self.url, max_size=1 << 20, open_timeout=20)
        await self.call("join", {"clientId": str(uuid.uuid4()), "pin": PIN})
        await self.call("keepalive", {"status": "onair"})

    async def keepalives(self, period_s: float, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            await self.call("keepalive", {"status": "onair"})
            next_at += period_s
            if (wait := next_at - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
            else:
                next_at = loop.time()

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)


async def _many_connections(s: Stack, tmp: Path) -> dict[str, float]:
    nats = NatsServer(tmp / "cell-nats")
    await asyncio.to_thread(nats.start)
    cell = Cell(nats_url=nats.url, etcd_prefix=BENCH_PREFIX, redis_prefix=BENCH_REDIS_PREFIX)
    try:
        # the rooms exist before svc_users starts: its first snapshot of etcd sees them
        room_ids = await _bench_rooms(s)
        async with (
            Users(s, tmp / "users-cell.log", cell=cell, log_level="WARNING") as svc,
            Gateway(s, tmp / "gateway-conns.log", cell=cell, log_level="WARNING") as gw,
        ):
            users = await _bench_users(s, gw, room_ids)
            return await _load(gw, users, users_pid=svc.pid)
    finally:
        await asyncio.to_thread(nats.stop)


async def _load(gw: Gateway, users: list[tuple[str, str]], *, users_pid: int) -> dict[str, float]:
    clients = [Client(f"{gw.url}?token={token}") for _, token in users]
    stop = asyncio.Event()
    loops: list[asyncio.Task[None]] = []
    try:
        # one connection first: the baseline holds every code path and the Janus connection
        await clients[0].open()
        loops.append(asyncio.create_task(clients[0].keepalives(IDLE_KEEPALIVE_S, stop)))
        await asyncio.sleep(2)
        base_kib = _rss_kib(gw.pid)
        gate = asyncio.Semaphore(JOIN_CONCURRENCY)

        async def open_one(c: Client) -> None:
            async with gate:
                await c.open()

        await asyncio.gather(*(open_one(c) for c in clients[1:]))
        loops += [asyncio.create_task(c.keepalives(IDLE_KEEPALIVE_S, stop)) for c in clients[1:]]
        await asyncio.sleep(SETTLE_S)
        idle_kib = _rss_kib(gw.pid)
        kib_per_conn = (idle_kib - base_kib) / (CONNS - 1)

        stop.set()
        await asyncio.gather(*loops)
        stop = asyncio.Event()
        loops = [asyncio.create_task(c.keepalives(1 / PER_CONN_RATE, stop)) for c in clients]
        await asyncio.sleep(RATE_WARMUP_S)
        replies0, t0 = sum(c.replies for c in clients), time.perf_counter()
        cpu0 = {pid: _cpu_seconds(pid) for pid in (gw.pid, users_pid, os.getpid())}
        await asyncio.sleep(RATE_WINDOW_S)
        elapsed = time.perf_counter() - t0
        per_s = (sum(c.replies for c in clients) - replies0) / elapsed
        cpu = {pid: 100 * (_cpu_seconds(pid) - c0) / elapsed for pid, c0 in cpu0.items()}
        errors = sum(c.errors for c in clients)
        if errors:
            raise RuntimeError(f"{errors} keepalives failed")
    finally:
        stop.set()
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in clients))
    return {
        "gateway_kib_per_conn": round(kib_per_conn, 2),
        "gateway_keepalives_per_s": round(per_s),
        # where the keepalive time goes (% of one core while they run): no goals, for reading
        "gateway_keepalive_cpu_pct": round(cpu[gw.pid], 1),
        # what one fully busy gateway core would do at this CPU cost per keepalive
        "gateway_keepalives_per_core_s": round(per_s / max(cpu[gw.pid] / 100, 0.01)),
        "gateway_keepalive_users_cpu_pct": round(cpu[users_pid], 1),
        "gateway_keepalive_client_cpu_pct": round(cpu[os.getpid()], 1),
    }


async def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp_dir:
        tmp = Path(tmp_dir)
        async with _stack(tmp) as (s, ns):
            figures = await _join_to_answer(s, ns, tmp)
            figures.update(await _many_connections(s, tmp))
    return figures
