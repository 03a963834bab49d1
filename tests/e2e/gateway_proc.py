"""A gateway process of its own for a test or a benchmark, pointed at a running stack.

``Gateway(stack, log)`` runs ``python -m svc_gateway`` on a free port with the stack's NATS,
etcd, Redis, Janus WebSocket port and secrets (what infra/stack.py gives its services), and waits
for ``/health``. ``etcd_prefix`` points it at rooms and Janus heartbeats under another etcd
prefix (rooms the stack's own services never see).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import httpx

from tests.servers import free_port
from tests.stackutil import Stack

__all__ = ["Gateway", "stack_secrets"]

ROOT = Path(__file__).resolve().parents[2]


def stack_secrets(s: Stack) -> dict[str, str]:
    out = {}
    for line in (s.run_dir / "secrets.env").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep:
            out[name.strip()] = value.strip().strip("'\"")
    return out


class Gateway:
    """One ``python -m svc_gateway`` on a free port, pointed at the stack's servers."""

    def __init__(self, s: Stack, log: Path, *, etcd_prefix: str | None = None) -> None:
        secrets = stack_secrets(s)
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.jwt_secret = secrets["JWT_SECRET"]
        self.log = log
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "NATS_SERVERS": f"nats://127.0.0.1:{s.port('NATS_PORT')}",
            "ETCD_ENDPOINTS": f"127.0.0.1:{s.port('ETCD_PORT')}",
            "REDIS_ADDR": f"127.0.0.1:{s.port('REDIS_PORT')}",
            "WS_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "JWT_SECRET": self.jwt_secret,
            "JANUS_TOKEN_KEY": secrets["JANUS_TOKEN_KEY"],
            "JANUS_WS_PORT": str(s.port("JANUS_WS_PORT")),
            "LOG_LEVEL": "WARNING",
        }
        if etcd_prefix is not None:
            self.env["ETCD_PREFIX_ROOMS"] = f"{etcd_prefix}rooms/"
            self.env["ETCD_PREFIX_JANUSES"] = f"{etcd_prefix}januses/"
            self.env["ETCD_PREFIX_MIXERS"] = f"{etcd_prefix}mixers/"
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Gateway:
        out = self.log.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "svc_gateway", env=self.env, cwd=ROOT, stdout=out, stderr=out
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
                    raise RuntimeError(f"svc_gateway did not get healthy:\n{tail}")
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
