"""Service processes of a test's or a benchmark's own, pointed at a running stack's servers.

``Gateway(stack, log)`` runs ``python -m svc_gateway`` on a free port with the stack's NATS,
etcd, Redis, Janus WebSocket port and secrets (what infra/stack.py gives its services) and waits
for ``/health``; ``Users`` does the same for ``python -m svc_users``. A ``Cell`` moves both
aside from the stack's own services: another NATS, another etcd key prefix (rooms the stack's
svc_rooms, svc_janus and svc_mixer never see) and another Redis key prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx

from tests.servers import free_port
from tests.stackutil import Stack

__all__ = ["Cell", "Gateway", "ServiceProcess", "Users", "stack_secrets"]

ROOT = Path(__file__).resolve().parents[2]


def stack_secrets(s: Stack) -> dict[str, str]:
    out = {}
    for line in (s.run_dir / "secrets.env").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep:
            out[name.strip()] = value.strip().strip("'\"")
    return out


@dataclass(frozen=True)
class Cell:
    """Where a test's own services live instead of the stack's defaults (None: the stack's)."""

    nats_url: str | None = None
    etcd_prefix: str | None = None  # e.g. "/bench-gw/": rooms/, januses/, mixers/ under it
    redis_prefix: str | None = None  # REDIS_USER_SVC_PREFIX


class ServiceProcess:
    """``python -m <module>`` on a free HTTP port; ready when ``/health`` answers 200."""

    module = ""

    def __init__(self, s: Stack, log: Path, *, cell: Cell = Cell(), log_level: str = "INFO") -> None:
        self.secrets = stack_secrets(s)
        self.port = free_port()
        self.log = log
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "NATS_SERVERS": cell.nats_url or f"nats://127.0.0.1:{s.port('NATS_PORT')}",
            "ETCD_ENDPOINTS": f"127.0.0.1:{s.port('ETCD_PORT')}",
            "REDIS_ADDR": f"127.0.0.1:{s.port('REDIS_PORT')}",
            "JWT_SECRET": self.secrets["JWT_SECRET"],
            "LOG_LEVEL": log_level,
        }
        if cell.etcd_prefix is not None:
            for kind in ("rooms", "januses", "mixers"):
                self.env[f"ETCD_PREFIX_{kind.upper()}"] = f"{cell.etcd_prefix}{kind}/"
        if cell.redis_prefix is not None:
            self.env["REDIS_USER_SVC_PREFIX"] = cell.redis_prefix
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Self:
        out = self.log.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", self.module, env=self.env, cwd=ROOT, stdout=out, stderr=out
            )
        finally:
            out.close()
        async with httpx.AsyncClient(timeout=1) as http:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{self.port}/health")).status_code == 200:
                        return self
                if self.proc.returncode is not None or time.monotonic() > deadline:
                    tail = self.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{self.module} did not get healthy:\n{tail}")
                await asyncio.sleep(0.2)

    async def __aexit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class Gateway(ServiceProcess):
    module = "svc_gateway"

    def __init__(self, s: Stack, log: Path, *, cell: Cell = Cell(), log_level: str = "INFO") -> None:
        super().__init__(s, log, cell=cell, log_level=log_level)
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.jwt_secret = self.secrets["JWT_SECRET"]
        self.env.update(
            {
                "WS_HTTP_ADDR": f"127.0.0.1:{self.port}",
                "JANUS_TOKEN_KEY": self.secrets["JANUS_TOKEN_KEY"],
                "JANUS_WS_PORT": str(s.port("JANUS_WS_PORT")),
            }
        )


class Users(ServiceProcess):
    module = "svc_users"

    def __init__(self, s: Stack, log: Path, *, cell: Cell = Cell(), log_level: str = "INFO") -> None:
        super().__init__(s, log, cell=cell, log_level=log_level)
        self.env.update(
            {
                "HTTP_ADDR": f"127.0.0.1:{self.port}",
                "API_TOKEN": self.secrets["API_TOKEN"],
                "VIEWER_TOKEN_SECRET": self.secrets["VIEWER_TOKEN_SECRET"],
                "HLS_KEY_SECRET": self.secrets["HLS_KEY_SECRET"],
            }
        )
