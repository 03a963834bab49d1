"""Fixtures for svc_mixer tests: the state store, svc_users in-process, nginx, mixer processes."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from common.keys import Keyspace
from tests.integration.svc_mixer.mixer_helpers import HLS_KEY_SECRET, MixerProcess
from tests.integration.svc_users.users_helpers import running_users
from tests.servers import LOOPBACK, EtcdServer, NatsServer, RedisServer
from tests.servers_nginx import NginxServer


@pytest.fixture
async def users_port(
    etcd_server: EtcdServer, nats_private: NatsServer, redis_server: RedisServer, keyspace: Keyspace
) -> AsyncIterator[int]:
    """svc_users (tokens and keys) in this test's loop; yields its HTTP port."""
    async with running_users(
        etcd_endpoint=etcd_server.endpoint,
        nats_url=nats_private.url,
        redis_addr=f"{LOOPBACK}:{redis_server.port}",
        keyspace=keyspace,
        hls_key_secret=HLS_KEY_SECRET,
    ) as url:
        yield int(url.rsplit(":", 1)[1])


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
