"""The local stack tool (infra/stack.py) against real servers under a real supervisord.

Every stack here lives in a temporary RUN_DIR on free ports, so these tests never collide with a
running `just up` stack (or with each other). Each test stops what it started in a `finally`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from typing import Any

import aetcd
import httpx
import nats
import pytest
import redis.asyncio as aredis

from tests.stackutil import COMPONENTS, Stack, shutdown_problems, stack, stop_sequence

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

    # secrets: generated once, private, and what the services run with
    secrets_env = s.run_dir / "secrets.env"
    assert secrets_env.stat().st_mode & 0o777 == 0o600
    assert (s.run_dir / "api-token").stat().st_mode & 0o777 == 0o600
    assert (s.run_dir / "supervisord.conf").stat().st_mode & 0o777 == 0o600
    assert s.run_dir.stat().st_mode & 0o777 == 0o700
    generated = secrets_env.read_text()
    assert set(stack.SECRETS) <= {line.split("=")[0] for line in generated.splitlines()}
    token = (s.run_dir / "api-token").read_text().strip()
    assert f"API_TOKEN={token}\n" in generated and len(token) >= 40
    assert f"{s.run_dir / 'api-token'}" in out and "curl -s -X POST" in out
    rooms = f"http://127.0.0.1:{s.port('SVC_ROOMS_PORT')}"
    assert httpx.put(f"{rooms}/api/modules/mixers/mixer1/mark", json={"label": "ready"}).status_code == 401
    ok = httpx.put(
        f"{rooms}/api/modules/mixers/mixer1/mark",
        json={"label": "ready"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert ok.status_code == 200, ok.text

    # a second up starts nothing new and keeps the secrets
    again = s.up().stdout
    assert "supervisord already runs" in again
    assert s.pids() == first
    assert secrets_env.read_text() == generated

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
    assert shutdown_problems(s.run_dir) == {}
    _assert_stopped_in_tiers(stop_sequence(s.run_dir))
    assert stack.supervisord_pid(s.settings) is None
    down_status = s.run("status").stdout
    assert all(row[1] == "stopped" for row in _table_rows(down_status).values()), down_status
    assert (s.run_dir / "etcd").is_dir(), "down keeps data"

    s.run("purge")
    assert not s.run_dir.exists()


def _assert_stopped_in_tiers(sequence: list[str]) -> None:
    """Every program stopped, each tier (reverse start order) before the next one."""
    tiers = stack.stop_tiers(stack.COMPONENTS)
    assert sorted(sequence) == sorted(COMPONENTS), sequence
    position = {name: i for i, name in enumerate(sequence)}
    for earlier, later in itertools.pairwise(tiers):
        assert max(position[n] for n in earlier) < min(position[n] for n in later), (tiers, sequence)


@pytest.mark.slow
def test_sigterm_to_supervisord_stops_services_before_servers(new_stack: Any) -> None:
    s: Stack = new_stack()
    s.up()
    pids = s.pids()
    os.kill(pids["supervisord"], signal.SIGTERM)
    _wait_for(lambda: not any(stack.pid_alive(p) for p in pids.values()), 60, "every process gone")
    assert shutdown_problems(s.run_dir) == {}
    _assert_stopped_in_tiers(stop_sequence(s.run_dir))


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


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def test_down_only_stops_the_processes_it_started(new_stack: Any) -> None:
    """pids.json names four pids; only the one that is still the recorded process is stopped."""
    s: Stack = new_stack()
    s.run_dir.mkdir(parents=True)
    ours, reused, old_format = _sleeper(), _sleeper(), _sleeper()
    gone = _sleeper()
    try:
        identity = stack.ProcessIdentity.of(ours.pid)
        assert identity is not None and "sleep 60" in identity.cmdline
        impostor = stack.ProcessIdentity.of(reused.pid)
        assert impostor is not None
        gone_identity = stack.ProcessIdentity.of(gone.pid)
        assert gone_identity is not None
        gone.kill()
        gone.wait()
        recorded = {
            "redis": identity.to_json(),
            # the pid of a process that started after the recorded one: a reused pid
            "etcd": {**impostor.to_json(), "start_ticks": impostor.start_ticks - 1},
            "nats": old_format.pid,  # a bare pid cannot be verified: never touched
            "janus": gone_identity.to_json(),  # vanished: not an error
        }
        (s.run_dir / "pids.json").write_text(json.dumps(recorded))
        out = s.run("down").stdout
        assert ours.wait(timeout=15) == -signal.SIGTERM
        assert reused.poll() is None and old_format.poll() is None, out
        assert f"etcd: pid {reused.pid} now belongs to another process" in out
        assert f"nats has no start time recorded (older format): not touching pid {old_format.pid}" in out
        assert not (s.run_dir / "pids.json").exists()
    finally:
        for proc in (ours, reused, old_format):
            proc.kill()
            proc.wait()
