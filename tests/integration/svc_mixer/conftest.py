"""Fixtures for svc_mixer tests: the state store, svc_users in-process, nginx, mixer processes."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from common.bus import Bus
from common.etcd import EtcdStore
from common.keys import Keyspace
from common.state import StateStore
from svc_users.app import main as users_main
from svc_users.config import Config as UsersConfig
from tests.integration.svc_mixer.mixer_helpers import HLS_KEY_SECRET, MixerProcess
from tests.servers import LOOPBACK, EtcdServer, NatsServer, free_port
from tests.servers_nginx import NginxServer

USERS_JWT_SECRET = "test-jwt-secret-0123456789abcdef0123"


@pytest.fixture
async def store(etcd: EtcdStore, bus: Bus, keyspace: Keyspace) -> StateStore:
    return StateStore(etcd, bus, keyspace)


@pytest.fixture
async def users_port(
    etcd_server: EtcdServer, nats_private: NatsServer, keyspace: Keyspace
) -> AsyncIterator[int]:
    """svc_users (tokens and keys) in this test's loop; yields its HTTP port."""
    port = free_port()
    config = UsersConfig.from_env(
        {
            "HTTP_ADDR": f"{LOOPBACK}:{port}",
            "ETCD_ENDPOINTS": etcd_server.endpoint,
            "ETCD_PREFIX_ROOMS": keyspace.prefix("rooms"),
            "ETCD_PREFIX_JANUSES": keyspace.prefix("januses"),
            "ETCD_PREFIX_MIXERS": keyspace.prefix("mixers"),
            "NATS_SERVERS": nats_private.url,
            "JWT_SECRET": USERS_JWT_SECRET,
            "HLS_KEY_SECRET": HLS_KEY_SECRET,
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(users_main(config, stop))
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(200):
                if task.done():
                    task.result()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://{LOOPBACK}:{port}/health")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@pytest.fixture
def nginx(users_port: int) -> Iterator[NginxServer]:
    # nginx workers run as an unprivileged user (nobody) when started by root: the served dir
    # must be world-readable, which pytest's 0700 tmp dirs are not
    run_dir = Path(tempfile.mkdtemp(prefix="audio-rtc-nginx-"))
    run_dir.chmod(0o755)
    server = NginxServer(run_dir, svc_users_port=users_port)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def make_mixer(
    tmp_path: Path, etcd_server: EtcdServer, nats_private: NatsServer, keyspace: Keyspace
) -> Iterator[Callable[..., MixerProcess]]:
    """Factory of mixer processes (started by the test); all cleaned up, FFmpegs included."""
    made: list[MixerProcess] = []

    def make(**kwargs: object) -> MixerProcess:
        mixer = MixerProcess(
            tmp_path / f"mixer-{len(made)}",
            nats_url=nats_private.url,
            etcd_endpoint=etcd_server.endpoint,
            keyspace=keyspace,
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(mixer)
        return mixer

    try:
        yield make
    finally:
        for mixer in made:
            mixer.cleanup()
