"""End to end over WebRTC: aiortc anchors in a client network namespace are heard in the HLS.

The whole stack runs as `just up` runs it (every service on 127.0.0.1 of the root namespace),
with its Janus gathering ICE candidates only on the test's veth (``JANUS_ICE_ENFORCE_LIST``;
the veth exists before `up`, so before Janus starts). Each anchor is a subprocess
(tests/e2e/anchor_client.py) that opens its WebSockets in the root namespace and makes its
RTCPeerConnection in the client namespace (tests/e2e/netns.py).

- ``test_anchors_through_gateway``: the issue's flow, as a browser on the stack's origin sees
  it (nginx proxies ``/api/rooms/*/users`` to svc_users and ``/ws`` to the gateway; the anchor
  sends that Origin). A room through svc_rooms, a user token per anchor from svc_users (API
  token), anchor A (440 Hz) joins through the gateway and offers: a
  decrypted HLS segment carries 440 Hz. Anchor B (660 Hz) joins: the HLS carries both, and each
  anchor hears the other's tone on its answer's track. Janus is killed (-9; supervisord
  restarts it): both anchors get ``reconnect``, rejoin with their jtoken, offer again, and the
  HLS carries both tones again.
- ``test_anchors_direct_on_janus``: the same audio path without gateway and users (anchors
  join the AudioBridge room straight over the Janus WebSocket API): it keeps the WebRTC
  harness itself covered (namespace, veth, Janus's enforce list, aiortc, tone analysis).
"""

from __future__ import annotations

import array
import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from common import records
from common.etcd import EtcdStore
from common.keys import Keyspace
from tests.e2e.anchor_client import AnchorProcess
from tests.e2e.hls import fresh_segment_pcm
from tests.e2e.netns import VethNamespace
from tests.e2e.tones import tone_levels
from tests.integration.eventcore import eventually
from tests.stackutil import Stack

pytestmark = [pytest.mark.slow, pytest.mark.janus, pytest.mark.ffmpeg, pytest.mark.timeout(180)]

A_HZ, B_HZ = 440, 660
PIN = "tone77"
# a tone present in a decoded segment or a received track; an absent one is far below it
PRESENT_DBFS = -40.0
ABSENT_BELOW_DB = 20.0


class Room:
    """A room of a running stack, seen through the REST APIs and nginx."""

    def __init__(self, s: Stack, http: httpx.AsyncClient, room_id: str, work_dir: Path) -> None:
        self.s = s
        self.http = http
        self.id = room_id
        self.work_dir = work_dir
        self.rooms = f"http://127.0.0.1:{s.port('SVC_ROOMS_PORT')}"
        self.origin = f"http://127.0.0.1:{s.port('NGINX_PORT')}"
        self.api_auth = {"Authorization": f"Bearer {(s.run_dir / 'api-token').read_text().strip()}"}

    async def create(self) -> None:
        r = await self.http.post(
            f"{self.rooms}/api/rooms", json={"roomId": self.id, "pin": PIN}, headers=self.api_auth
        )
        assert r.status_code == 201, r.text
        await eventually(self._on_air, 20, "room forwarding to a ready mixer")

    async def _on_air(self) -> bool:
        r = await self.http.get(f"{self.rooms}/api/rooms/{self.id}")
        body = r.json().get("room", {}) if r.status_code == 200 else {}
        return bool(
            body.get("janus", {}).get("state") == "forwarding"
            and body.get("mixer", {}).get("state") == "ready"
        )

    async def janus_room_id(self) -> int:
        async with EtcdStore.open([f"127.0.0.1:{self.s.port('ETCD_PORT')}"]) as etcd:
            kv = await etcd.get(Keyspace().room_key(self.id, "janus"))
        assert kv is not None
        return int(records.decode_record("janus", kv.value).janus_room_id)

    async def user_token(self, display: str) -> tuple[str, str]:
        """(userID, token) of a new anchor of the room."""
        r = await self.http.post(
            f"{self.origin}/api/rooms/{self.id}/users",  # nginx proxies it to svc_users
            json={"role": "anchor", "displayName": display},
            headers=self.api_auth,
        )
        assert r.status_code == 200, r.text
        return str(r.json()["userID"]), str(r.json()["token"])

    async def hls_pcm(self, since: float) -> array.array[int]:
        return await fresh_segment_pcm(
            self.http,
            origin=self.origin,
            room=self.id,
            hls_dir=self.s.run_dir / "hls" / self.id,
            since=since,
            work_dir=self.work_dir,
        )

    async def delete(self) -> None:
        r = await self.http.delete(f"{self.rooms}/api/rooms/{self.id}", headers=self.api_auth)
        assert r.status_code == 200, r.text


def assert_tones(levels: dict[str, float], present: Sequence[int], absent: Sequence[int], what: str) -> None:
    loud = [levels[str(float(f))] for f in present]
    assert all(db > PRESENT_DBFS for db in loud), f"{what}: {levels} (want {present} above {PRESENT_DBFS})"
    for f in absent:
        assert levels[str(float(f))] < min(loud) - ABSENT_BELOW_DB, (
            f"{what}: {levels} ({f} Hz should be absent)"
        )


def pcm_levels(pcm: array.array[int]) -> dict[str, float]:
    return {str(float(f)): round(db, 1) for f, db in tone_levels(pcm, 48000, (A_HZ, B_HZ)).items()}


async def connected(anchor: AnchorProcess, *, after: int = 0) -> float:
    """Wait for the answer and ICE after event ``after``; the answer's time (epoch s)."""
    answer = await anchor.wait_for("answer", after=after, timeout_s=45)
    await anchor.wait_for("ice", lambda e: e["state"] in ("connected", "completed"), after=after)
    return float(answer["t"])


@asynccontextmanager
async def running(anchor: AnchorProcess) -> AsyncIterator[AnchorProcess]:
    await anchor.start()
    try:
        yield anchor
    finally:
        await anchor.stop()


def up_for_webrtc(new_stack: Any, ns: VethNamespace) -> Stack:
    s: Stack = new_stack(JANUS_ICE_ENFORCE_LIST=ns.server_if)
    s.up()
    conf = (s.run_dir / "janus" / "janus.jcfg").read_text()
    assert f'ice_enforce_list = "{ns.server_if}"' in conf
    return s


def test_anchors_through_gateway(new_stack: Any, veth_netns: VethNamespace, tmp_path: Path) -> None:
    s = up_for_webrtc(new_stack, veth_netns)
    asyncio.run(_gateway_flow(s, veth_netns, tmp_path))
    s.down()


async def _gateway_flow(s: Stack, ns: VethNamespace, tmp_path: Path) -> None:
    async with httpx.AsyncClient(timeout=10) as http, AsyncExitStack() as anchors:
        room = Room(s, http, "e2e-webrtc-gw", tmp_path)
        await room.create()
        # like a browser on the stack's origin: nginx proxies /ws to the gateway
        gateway = f"ws://127.0.0.1:{s.port('NGINX_PORT')}/ws"

        user_a, token_a = await room.user_token("anchor A")
        a = await anchors.enter_async_context(
            running(
                AnchorProcess.gateway(
                    "A",
                    netns_name=ns.name,
                    frequency=A_HZ,
                    url=f"{gateway}?token={token_a}",
                    pin=PIN,
                    origin=room.origin,
                )
            )
        )
        since = await connected(a)
        assert_tones(pcm_levels(await room.hls_pcm(since)), [A_HZ], [B_HZ], "HLS with anchor A")

        user_b, token_b = await room.user_token("anchor B")
        b = await anchors.enter_async_context(
            running(
                AnchorProcess.gateway(
                    "B",
                    netns_name=ns.name,
                    frequency=B_HZ,
                    url=f"{gateway}?token={token_b}",
                    pin=PIN,
                    origin=room.origin,
                )
            )
        )
        since = await connected(b)
        assert_tones(pcm_levels(await room.hls_pcm(since)), [A_HZ, B_HZ], [], "HLS with anchors A and B")
        await _each_hears_the_other(a, b)

        # AudioBridge's talking events (aiortc sends the audio level) reach each anchor through its
        # own handle when someone starts talking: A was there when B started. B joined while A
        # talked already: svc_users' member list (roomStatus) tells it (the gateway reports its
        # own user's talking), and shows both on air
        def talking_of(user: str) -> Callable[[dict[str, Any]], bool]:
            return lambda e: e["method"] == "talking" and e["params"] == {"userId": user, "talking": True}

        def members(e: dict[str, Any]) -> dict[str, tuple[str | None, bool]]:
            return {m["userId"]: (m.get("status"), m["talking"]) for m in e["params"]}

        def all_onair_talking(e: dict[str, Any]) -> bool:
            return e["method"] == "roomStatus" and members(e) == {
                u: ("onair", True) for u in (user_a, user_b)
            }

        await a.wait_for("notification", talking_of(user_b), timeout_s=15)
        for anchor in (a, b):
            await anchor.wait_for("notification", all_onair_talking, timeout_s=15)

        marks = {a.name: len(a.events), b.name: len(b.events)}
        janus_pid = s.pids()["janus"]
        os.kill(janus_pid, signal.SIGKILL)
        for anchor in (a, b):
            notice = await anchor.wait_for(
                "notification", lambda e: e["method"] == "reconnect", after=marks[anchor.name], timeout_s=30
            )
            assert notice["params"]["reason"] in ("janus_restarted", "migrated"), notice
        rejoined = [
            await connected(anchor, after=marks[anchor.name]) for anchor in (a, b)
        ]  # each answer after the kill is a rejoin with a new offer
        assert all(anchor.matching("answer", lambda e: e["rejoin"]) for anchor in (a, b)), (
            "an anchor answered without rejoining"
        )
        # supervisord restarted it (RUNNING once its startsecs passed)
        await eventually(lambda: s.pids().get("janus", janus_pid) != janus_pid, 15, "Janus restarted")
        assert_tones(
            pcm_levels(await room.hls_pcm(max(rejoined))), [A_HZ, B_HZ], [], "HLS after the Janus restart"
        )
        await _each_hears_the_other(a, b)
        await room.delete()


async def _each_hears_the_other(a: AnchorProcess, b: AnchorProcess) -> None:
    # the answer's track is the room's mix without the listener's own voice
    await asyncio.sleep(1.5)
    heard_a, heard_b = await asyncio.gather(a.heard(1.5, (A_HZ, B_HZ)), b.heard(1.5, (A_HZ, B_HZ)))
    assert_tones(heard_a["levels"], [B_HZ], [A_HZ], f"anchor A hears {heard_a}")
    assert_tones(heard_b["levels"], [A_HZ], [B_HZ], f"anchor B hears {heard_b}")


def test_anchors_direct_on_janus(new_stack: Any, veth_netns: VethNamespace, tmp_path: Path) -> None:
    s = up_for_webrtc(new_stack, veth_netns)
    asyncio.run(_direct_flow(s, veth_netns, tmp_path))
    s.down()


async def _direct_flow(s: Stack, ns: VethNamespace, tmp_path: Path) -> None:
    janus_ws = f"ws://127.0.0.1:{s.port('JANUS_WS_PORT')}"
    async with httpx.AsyncClient(timeout=10) as http, AsyncExitStack() as anchors:
        room = Room(s, http, "e2e-webrtc-janus", tmp_path)
        await room.create()
        number = await room.janus_room_id()
        t0 = time.time()
        a = await anchors.enter_async_context(
            running(
                AnchorProcess.janus(
                    "A", netns_name=ns.name, frequency=A_HZ, url=janus_ws, room=number, pin=PIN
                )
            )
        )
        since = await connected(a)
        assert_tones(pcm_levels(await room.hls_pcm(since)), [A_HZ], [B_HZ], "HLS with anchor A")
        b = await anchors.enter_async_context(
            running(
                AnchorProcess.janus(
                    "B", netns_name=ns.name, frequency=B_HZ, url=janus_ws, room=number, pin=PIN
                )
            )
        )
        since = await connected(b)
        assert_tones(pcm_levels(await room.hls_pcm(since)), [A_HZ, B_HZ], [], "HLS with anchors A and B")
        await _each_hears_the_other(a, b)
        assert time.time() - t0 < 60
        await room.delete()
