"""The local stack tool (infra/stack.py) against real servers under a real supervisord.

Every stack here lives in a temporary RUN_DIR on free ports, so these tests never collide with a
running `just up` stack (or with each other). Each test stops what it started in a `finally`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from typing import Any

import aetcd
import nats
import pytest
import redis.asyncio as aredis

from tests.stackutil import COMPONENTS, Stack, stack

CLIENT_TIMEOUT_S = 10.0


async def _check_clients(s: Stack) -> None:
    """Use each server the way the services will: JetStream, an etcd put/get, a Redis PING."""
    async with asyncio.timeout(CLIENT_TIMEOUT_S):
        nc = await nats.connect(
            f"nats://127.0.0.1:{s.port('NATS_PORT')}", connect_timeout=2, max_reconnect_attempts=0
        )
        try:
            info = await nc.jetstream().account_info()
            assert info.limits is not None
        finally:
            await nc.close()
        client = aetcd.Client(host="127.0.0.1", port=s.port("ETCD_PORT"), timeout=5)
        try:
            await client.put(b"/t-stack/key", b"v1")
            got = await client.get(b"/t-stack/key")
            assert got is not None and got.value == b"v1"
        finally:
            await client.close()
        r = aredis.Redis(host="127.0.0.1", port=s.port("REDIS_PORT"), socket_timeout=5)
        try:
            assert await r.ping() is True
        finally:
            await r.aclose()


def _wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"{what} not within {timeout_s:.0f} s")


def _table_rows(out: str) -> dict[str, list[str]]:
    table = out.split("COMPONENT", 1)[1].split("\nURLs:", 1)[0]  # not the URL lines below it
    rows = [line.split() for line in table.splitlines()]
    return {row[0]: row for row in rows if row and row[0] in COMPONENTS}


@pytest.mark.slow
def test_up_is_healthy_idempotent_restarts_crashes_and_down_leaves_nothing(new_stack: Any) -> None:
    s: Stack = new_stack()
    out = s.up().stdout
    rows = _table_rows(out)
    assert set(rows) == set(COMPONENTS)
    for name, row in rows.items():
        assert row[1] == "running" and row[-1] == "healthy", (name, out)
    assert f"nats://127.0.0.1:{s.port('NATS_PORT')}" in out
    asyncio.run(_check_clients(s))
    first = s.pids()
    assert set(first) == {*COMPONENTS, "supervisord"}

    # a second up starts nothing new
    again = s.up().stdout
    assert "supervisord already runs" in again
    assert s.pids() == first

    # a crash: supervisord restarts etcd, the others keep running untouched
    os.kill(first["etcd"], signal.SIGKILL)
    new_etcd = _wait_for(
        lambda: (p := s.pids().get("etcd")) not in (None, first["etcd"]) and p,
        30,
        "etcd restarted by supervisord",
    )
    _wait_for(lambda: stack.COMPONENTS[1].health.check(s.settings), 30, "restarted etcd healthy")
    after = s.pids()
    assert after["etcd"] == new_etcd
    assert {k: v for k, v in after.items() if k != "etcd"} == {k: v for k, v in first.items() if k != "etcd"}
    asyncio.run(_check_clients(s))  # etcd data survived the crash too: same data dir

    status = s.run("status").stdout
    assert all(row[-1] == "healthy" for row in _table_rows(status).values()), status
    logs = s.run("logs", "etcd", "-n", "5").stdout
    assert len(logs.strip().splitlines()) >= 2

    s.down()
    for name, pid in {**first, "etcd": new_etcd}.items():
        assert not stack.pid_alive(pid), f"{name} (pid {pid}) still alive after down"
    assert stack.supervisord_pid(s.settings) is None
    down_status = s.run("status").stdout
    assert all(row[1] == "stopped" for row in _table_rows(down_status).values()), down_status
    assert (s.run_dir / "etcd").is_dir(), "down keeps data"

    s.run("purge")
    assert not s.run_dir.exists()


@pytest.mark.slow
def test_two_stacks_run_side_by_side(new_stack: Any) -> None:
    a: Stack = new_stack("a")
    b: Stack = new_stack("b")
    a.up()
    b.up()
    pa, pb = a.pids(), b.pids()
    assert set(pa) == set(pb) == {*COMPONENTS, "supervisord"}
    assert not set(pa.values()) & set(pb.values())
    asyncio.run(_check_clients(a))
    asyncio.run(_check_clients(b))
    a.down()
    assert all(not stack.pid_alive(p) for p in pa.values())
    # stopping one leaves the other alone
    assert b.pids() == pb
    asyncio.run(_check_clients(b))
    b.down()
    assert all(not stack.pid_alive(p) for p in pb.values())


def test_up_refuses_a_port_held_by_another_process(new_stack: Any) -> None:
    s: Stack = new_stack()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", s.port("REDIS_PORT")))
        holder.listen()
        proc = s.run("up", "--no-install", check=False)
        status = s.run("status").stdout
    assert proc.returncode == 1
    # both name the holder: this test process
    assert f"{s.port('REDIS_PORT')} (redis) held by " in proc.stderr
    assert f"(pid {os.getpid()})" in proc.stderr
    assert f"port {s.port('REDIS_PORT')} in use by " in status
    assert f"(pid {os.getpid()})" in status
    assert stack.supervisord_pid(s.settings) is None, "nothing may start when a port is taken"


def test_status_and_down_work_when_nothing_ever_ran(new_stack: Any) -> None:
    s: Stack = new_stack()
    status = s.run("status")
    assert {row[1] for row in _table_rows(status.stdout).values()} == {"stopped"}
    assert "not running" in s.run("down").stdout
