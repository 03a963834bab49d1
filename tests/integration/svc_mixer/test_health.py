"""The mixer's /health over real servers: 200 with every named check true while it serves its
rooms (the FFmpeg count against the rooms assigned to it), 503 naming ``nats`` while its NATS
server is down, 200 again once NATS is back. The FFmpeg check's rule (exits, restart backoff)
is tested on a fake clock in tests/unit/svc_mixer/test_health.py."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from common.state import StateStore
from tests.integration.eventcore import eventually
from tests.integration.svc_mixer.mixer_helpers import MixerProcess, onair, put_livemeta, unique_id
from tests.servers import NatsServer

CHECKS = {"nats", "etcd", "heartbeat", "reconciler", "watchdog", "ffmpeg"}


def _health(mixer: MixerProcess) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{mixer.url}/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_health_names_its_checks_and_fails_without_nats(
    store: StateStore, make_mixer: Callable[..., MixerProcess], nats_private: NatsServer
) -> None:
    mixer = make_mixer()
    await asyncio.to_thread(mixer.start)
    room = unique_id("health")
    await put_livemeta(store, room, onair(mixer.mixer_id))
    await eventually(lambda: mixer.ffmpeg_pid(room) is not None, 15, "FFmpeg running")

    async def serving() -> bool:
        status, body = await asyncio.to_thread(_health, mixer)
        return status == 200 and body.get("rooms_running") == 1

    await eventually(serving, 15, "healthy with the room's FFmpeg")
    status, body = await asyncio.to_thread(_health, mixer)
    assert status == 200 and body["status"] == "ok"
    assert body["checks"] == dict.fromkeys(CHECKS, True)
    assert body["rooms_assigned"] == 1 and body["rooms_missing"] == [] and body["rooms_backoff"] == []
    assert body["mixer_id"] == mixer.mixer_id and body["rooms"] == [room]

    await asyncio.to_thread(nats_private.stop)
    try:

        async def nats_down() -> bool:
            status, body = await asyncio.to_thread(_health, mixer)
            return status == 503 and body["checks"]["nats"] is False

        await eventually(nats_down, 15, "503 naming nats")
        status, body = await asyncio.to_thread(_health, mixer)
        assert body["status"] == "unavailable"
        # only NATS is down: etcd, the lease and the FFmpeg are fine
        assert {k for k, ok in body["checks"].items() if not ok} == {"nats"}
    finally:
        await asyncio.to_thread(nats_private.start)

    async def recovered() -> bool:
        return (await asyncio.to_thread(_health, mixer))[0] == 200

    await eventually(recovered, 20, "healthy again after NATS came back")
