"""Helpers for the svc_mixer integration tests, contract tests and benchmarks (plain functions).

- ``MixerProcess``: ``python -m svc_mixer`` as a real process (it must survive ``kill -9``)
  pointed at test servers, with its own HLS, state dir and RTP port range;
- ``onair`` / ``removing`` / ``janus_record``: the records svc_rooms and svc_janus would write;
- ``ffmpeg_pids_of``: every live process whose command line names a path (orphan checks).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

from common import records
from common.keys import Keyspace, StateKey
from common.state import StateStore
from svc_mixer.procs import ProcessRegistry, cmdline_of
from tests.servers import LOOPBACK, free_port, wait_until

__all__ = [
    "HLS_KEY_SECRET",
    "MixerProcess",
    "ffmpeg_pids_of",
    "janus_record",
    "onair",
    "put_livemeta",
    "removing",
    "unique_id",
]

ROOT = Path(__file__).resolve().parents[3]
HLS_KEY_SECRET = "test-hls-key-secret-0123456789abcdef"
_NEXT_PORT_BASE = [22000 + (os.getpid() % 50) * 400]


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _port_range(size: int) -> tuple[int, int]:
    # each MixerProcess of this test run gets its own slice, so parallel mixers never share
    start = _NEXT_PORT_BASE[0]
    _NEXT_PORT_BASE[0] += size + 2
    return start, start + size


def onair(mixer_id: str, *, nonce: str | None = None, generation: int = 0) -> records.LiveMeta:
    return records.LiveMeta(
        status=records.LiveStatus.ONAIR,
        janus_id="janus1",
        mixer_id=mixer_id,
        nonce=nonce or secrets.token_hex(10),
        generation=generation,
        created_at=datetime.now(UTC),
    )


def removing() -> records.LiveMeta:
    now = datetime.now(UTC)
    return records.LiveMeta(
        status=records.LiveStatus.REMOVING, janus_id="", mixer_id="", nonce="", created_at=now, discard_at=now
    )


def janus_record(
    janus_room_id: int, *, generation: int = 0, stream_id: int | None = None
) -> records.JanusRecord:
    """What svc_janus writes once it forwards to the mixer (``stream_id``: the forwarder's)."""
    return records.JanusRecord(
        janus_id="janus1",
        janus_room_id=janus_room_id,
        status=records.JanusStatus.FORWARDING,
        forwarder_stream_id=stream_id,
        generation=generation,
        updated_at=datetime.now(UTC),
    )


async def put_livemeta(store: StateStore, room_id: str, meta: records.LiveMeta) -> None:
    await store.put(StateKey("rooms", room_id, "livemeta"), meta)


def ffmpeg_pids_of(marker: str) -> list[int]:
    """Live processes whose argv mentions ``marker`` (e.g. the mixer's state dir)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        argv = cmdline_of(int(proc.name))
        if argv and "ffmpeg" in Path(argv[0]).name and any(marker in a for a in argv):
            pids.append(int(proc.name))
    return pids


class MixerProcess:
    """``python -m svc_mixer`` on test servers; ``start``/``stop``/``kill`` like tests.servers."""

    def __init__(
        self,
        run_dir: Path,
        *,
        nats_url: str,
        etcd_endpoint: str,
        keyspace: Keyspace,
        key_base_url: str = "http://127.0.0.1:9/hls/rooms/",
        hls_dir: Path | None = None,
        mixer_id: str | None = None,
        ports: int = 40,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.mixer_id = mixer_id or unique_id("mixer")
        self.hls_dir = hls_dir or run_dir / "hls"
        self.state_dir = run_dir / "state"
        self.http_port = free_port()
        self.port_start, self.port_end = _port_range(ports)
        self.log_path = run_dir / "svc_mixer.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            "NATS_SERVERS": nats_url,
            "ETCD_ENDPOINTS": etcd_endpoint,
            "ETCD_PREFIX_ROOMS": keyspace.prefix("rooms"),
            "ETCD_PREFIX_JANUSES": keyspace.prefix("januses"),
            "ETCD_PREFIX_MIXERS": keyspace.prefix("mixers"),
            "MIXER_ID": self.mixer_id,
            "MIXER_IP": LOOPBACK,
            "HTTP_ADDR": f"{LOOPBACK}:{self.http_port}",
            "RTP_PORT_START": str(self.port_start),
            "RTP_PORT_END": str(self.port_end),
            "KEY_BASE_URL": key_base_url,
            "HLS_DIR": str(self.hls_dir),
            "STATE_DIR": str(self.state_dir),
            "HLS_KEY_SECRET": HLS_KEY_SECRET,
            "HLS_TIME": "1s",
            "HLS_LIST_SIZE": "4",
            "HLS_DELETE_GRACE": "2s",
            "FFMPEG_STOP_TIMEOUT": "2s",
            "LEASE_TTL": "3s",
            "APP_SHUTDOWN_TIMEOUT": "15s",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"svc_mixer exited with {self.proc.returncode}: {self.log_tail()}")
        with urllib.request.urlopen(f"{self.url}/health", timeout=0.5) as r:
            return bool(r.status == 200)

    def start(self, timeout_s: float = 30.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "svc_mixer"],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self._healthy, timeout_s, "svc_mixer /health")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def ffmpeg_pid(self, room_id: str) -> int | None:
        """The pid the mixer recorded for the room's FFmpeg, if that process is alive."""
        found = ProcessRegistry(self.state_dir / "procs").recorded().get(room_id)
        if found is None:
            return None
        pid, argv = found
        return pid if cmdline_of(pid) == argv else None

    def kill(self) -> None:
        """SIGKILL the service (its FFmpegs survive, as after a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        """Stop the service and kill any FFmpeg of this mixer still running (test teardown)."""
        self.stop()
        for pid in ffmpeg_pids_of(str(self.state_dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while ffmpeg_pids_of(str(self.state_dir)) and time.monotonic() < deadline:
            time.sleep(0.05)
