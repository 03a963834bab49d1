"""An aiortc anchor for the WebRTC tests and the gateway benchmark (a subprocess per anchor).

    python -m tests.e2e.anchor_client --netns NS --frequency 440 gateway --url WS_URL --client-id ID
    python -m tests.e2e.anchor_client --netns NS --frequency 440 janus --url JANUS_WS --room N --pin P
    python -m tests.e2e.anchor_client --netns NS bench

It starts in the root network namespace, where every service listens on 127.0.0.1, moves into
the client namespace ``NS`` (tests/e2e/netns.py) and only then makes its RTCPeerConnection, so
ICE gathers on the veth's client address. WebSockets are created as root-namespace sockets
(``netns.root_socket``), so reconnects after the move still reach 127.0.0.1.

- ``gateway``: speaks the gateway's JSON-RPC: ``join {clientId, pin?, jtoken?}``, ``offer
  {sdp}`` with the whole gathered offer, ``icecandidate {candidate: {completed: true}}``,
  ``keepalive {status: onair}`` every ``--keepalive-s``. A ``reconnect`` notification makes it
  close the socket, reconnect, join again with its ``jtoken`` and offer a new connection.
- ``janus``: the same audio straight over the Janus WebSocket API (create, attach, AudioBridge
  ``join`` with the offer): proves the harness without a gateway.
- ``bench``: no connection of its own; each ``join_once`` command times connect + join + offer
  -> answer for one user (the offer is gathered before the clock starts), then leaves.

The anchor sends a sine of ``--frequency`` Hz (20 ms frames, 48 kHz) and records the remote
track (the room's mix minus itself). Commands arrive as JSON lines on stdin::

    {"cmd": "heard", "seconds": 2, "probe": [440, 660]}   -> {"event": "heard", ...}
    {"cmd": "join_once", "url": ..., "clientId": ..., "pin": ...}   (bench)
    {"cmd": "leave"} / {"cmd": "quit"}

and everything that happens is printed to stdout as one JSON object per line (``event`` names
the kind). ``AnchorProcess`` is the parent's side: start, read events, send commands.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import fractions
import itertools
import json
import math
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import websockets
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.client import ClientConnection

from tests.e2e import netns
from tests.e2e.tones import dominant_frequencies, level_dbfs, tone_levels

__all__ = ["AnchorProcess", "RpcError", "SineTrack", "main"]

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
ROOT = Path(__file__).resolve().parents[2]


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": round(time.time(), 3), **fields}), flush=True)


# -- audio -----------------------------------------------------------------------------------


class SineTrack(MediaStreamTrack):
    """A mono 48 kHz sine in 20 ms frames, paced in real time (what a microphone would give)."""

    kind = "audio"

    def __init__(self, frequency: float, amplitude: float = 0.3) -> None:
        super().__init__()
        # one second of samples: an integer frequency makes it loop without a phase jump
        peak = amplitude * 32767
        self._table = array.array(
            "h", (round(peak * math.sin(2 * math.pi * frequency * i / RATE)) for i in range(RATE))
        )
        self._table.extend(self._table[:FRAME_SAMPLES])  # a frame may wrap around the end
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._pts / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        offset = self._pts % RATE
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(self._table[offset : offset + FRAME_SAMPLES].tobytes())
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME_SAMPLES
        return frame


class Recorder:
    """Reads the remote track; keeps the last ``keep_s`` seconds as mono 16-bit samples."""

    def __init__(self, keep_s: float = 8.0) -> None:
        self._frames: deque[tuple[float, array.array[int]]] = deque(maxlen=int(keep_s * 50) + 1)
        self.frames = 0
        self._task: asyncio.Task[None] | None = None

    def follow(self, track: MediaStreamTrack) -> None:
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.create_task(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                channels = len(frame.layout.channels)
                raw = bytes(frame.planes[0])[: frame.samples * channels * 2]
                pcm = array.array("h", raw)
                if channels > 1:
                    pcm = pcm[::channels]
                self._frames.append((time.monotonic(), pcm))
                self.frames += 1

    def last(self, seconds: float) -> array.array[int]:
        since = time.monotonic() - seconds
        out = array.array("h")
        for at, pcm in self._frames:
            if at >= since:
                out.extend(pcm)
        return out

    def heard(self, seconds: float, probe: Sequence[float]) -> dict[str, Any]:
        pcm = self.last(seconds)
        return {
            "seconds": len(pcm) / RATE,
            "frames": self.frames,
            "rmsDbfs": round(level_dbfs(pcm), 1),
            "peaks": [[f, round(db, 1)] for f, db in dominant_frequencies(pcm, RATE)],
            "levels": {str(f): round(db, 1) for f, db in tone_levels(pcm, RATE, probe).items()},
        }

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


# -- WebRTC ----------------------------------------------------------------------------------


def new_peer(frequency: float, recorder: Recorder) -> RTCPeerConnection:
    # No ICE servers: aiortc would otherwise ask Google's STUN server (traffic off the machine).
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(SineTrack(frequency))

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            recorder.follow(track)

    @pc.on("iceconnectionstatechange")
    def on_ice() -> None:
        emit("ice", state=pc.iceConnectionState)

    return pc


async def gathered_offer(pc: RTCPeerConnection) -> dict[str, str]:
    """The offer with every candidate in it (aiortc gathers fully in setLocalDescription)."""
    await pc.setLocalDescription(await pc.createOffer())
    return {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}


async def wait_ice_connected(pc: RTCPeerConnection, timeout_s: float) -> float:
    t0 = time.perf_counter()
    async with asyncio.timeout(timeout_s):
        while pc.iceConnectionState not in ("connected", "completed"):
            if pc.iceConnectionState == "failed":
                raise RuntimeError("ICE failed")
            await asyncio.sleep(0.01)
    return (time.perf_counter() - t0) * 1000


# -- the gateway's JSON-RPC ------------------------------------------------------------------


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.data = data


async def open_root_ws(
    url: str, *, origin: str | None = None, subprotocol: str | None = None, timeout_s: float = 10
) -> ClientConnection:
    """A WebSocket over a root-namespace TCP socket (works after ``netns.enter``)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    sock = netns.root_socket()
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            headers = {"Origin": origin} if origin else None
            protocols = [websockets.Subprotocol(subprotocol)] if subprotocol else None
            return await websockets.connect(
                url, sock=sock, additional_headers=headers, subprotocols=protocols, open_timeout=None
            )
    except BaseException:
        sock.close()
        raise


class RpcConnection:
    """One gateway WebSocket: requests with integer ids, notifications to ``on_notify``."""

    def __init__(self, ws: ClientConnection, on_notify: Callable[[str, Any], None]) -> None:
        self.ws = ws
        self._on_notify = on_notify
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.create_task(self._read())
        self.closed = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(
        cls, url: str, on_notify: Callable[[str, Any], None], *, origin: str | None = None
    ) -> RpcConnection:
        return cls(await open_root_ws(url, origin=origin), on_notify)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "method" in msg and "id" not in msg:
                    self._on_notify(msg["method"], msg.get("params"))
                    continue
                future = self._pending.pop(msg.get("id"), None)
                if future is None or future.done():
                    continue
                if "error" in msg:
                    err = msg["error"]
                    future.set_exception(
                        RpcError(err.get("code", 0), err.get("message", ""), err.get("data"))
                    )
                else:
                    future.set_result(msg.get("result"))
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            code, reason = self.ws.close_code or 1006, self.ws.close_reason or ""
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"closed {code} {reason}"))
            self._pending.clear()
            if not self.closed.done():
                self.closed.set_result((code, reason))

    async def call(self, method: str, params: Any = None, *, timeout_s: float = 15) -> Any:
        if self.closed.done():
            raise ConnectionError("closed")
        rid = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        await self.ws.send(json.dumps(msg))
        async with asyncio.timeout(timeout_s):
            return await future

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class GatewayAnchor:
    """An anchor through the gateway: join, offer, keepalives, rejoin on ``reconnect``."""

    def __init__(self, args: argparse.Namespace, recorder: Recorder) -> None:
        self.url: str = args.url
        self.client_id: str = args.client_id or str(uuid.uuid4())
        self.pin: str | None = args.pin
        self.origin: str | None = args.origin
        self.frequency: float = args.frequency
        self.keepalive_s: float = args.keepalive_s
        self.recorder = recorder
        self.rpc: RpcConnection | None = None
        self.pc: RTCPeerConnection | None = None
        self.jtoken: str | None = None
        self.joins = 0
        self._session: asyncio.Task[None] | None = None
        self.done = asyncio.Event()

    def start(self) -> None:
        self._session = asyncio.create_task(self._connect_loop(first=True))

    def on_notify(self, method: str, params: Any) -> None:
        emit("notification", method=method, params=params)
        if method == "reconnect":
            # (re)start the whole session: a later reconnect replaces an unfinished rejoin
            if self._session is not None:
                self._session.cancel()
            self._session = asyncio.create_task(self._connect_loop(first=False))
        elif method == "kicked":
            self.done.set()

    async def _teardown(self) -> None:
        rpc, self.rpc = self.rpc, None
        pc, self.pc = self.pc, None
        if rpc is not None:
            await rpc.close()
        if pc is not None:
            await pc.close()

    async def _connect_loop(self, *, first: bool) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                await self._teardown()
                await self._session_once(first=first)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # anything: a dead task would leave the anchor silent
                message = f"{type(exc).__name__}: {exc}"
                if first or time.monotonic() > deadline:
                    emit("error", stage="session", message=message, code=getattr(exc, "code", None))
                    self.done.set()
                    return
                emit("retry", message=message, code=getattr(exc, "code", None))
                await asyncio.sleep(0.5)

    async def _session_once(self, *, first: bool) -> None:
        t0 = time.perf_counter()
        self.rpc = rpc = await RpcConnection.open(self.url, self.on_notify, origin=self.origin)
        params: dict[str, Any] = {"clientId": self.client_id}
        if self.pin is not None:
            params["pin"] = self.pin
        if self.jtoken is not None:
            params["jtoken"] = self.jtoken
        joined = await rpc.call("join", params)
        self.jtoken = joined["jtoken"]
        self.joins += 1
        emit("joined", resume=joined.get("resume"), joins=self.joins, rejoin=not first)
        self.pc = pc = new_peer(self.frequency, self.recorder)
        offer = await gathered_offer(pc)
        answer = await rpc.call("offer", {"sdp": offer})
        ms = (time.perf_counter() - t0) * 1000
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"]["sdp"], type="answer"))
        await rpc.call("icecandidate", {"candidate": {"completed": True}})
        emit("answer", ms=round(ms, 1), rejoin=not first)
        await rpc.call("keepalive", {"status": "onair"})
        while True:
            closed = await asyncio.wait({rpc.closed}, timeout=self.keepalive_s)
            if closed[0]:
                code, reason = rpc.closed.result()
                emit("closed", code=code, reason=reason)
                self.done.set()
                return
            await rpc.call("keepalive", {"status": "onair"})

    async def leave(self) -> None:
        if self._session is not None:
            self._session.cancel()
        if self.rpc is not None:
            with contextlib.suppress(Exception):
                await self.rpc.call("leave", timeout_s=5)
                await asyncio.wait_for(asyncio.shield(self.rpc.closed), 5)
                emit("left", close=list(self.rpc.closed.result()))
        await self._teardown()
        self.recorder.stop()


class JanusAnchor:
    """The same anchor straight on Janus's WebSocket API (no gateway): proves the harness."""

    def __init__(self, args: argparse.Namespace, recorder: Recorder) -> None:
        self.url: str = args.url
        self.room: int = args.room
        self.pin: str | None = args.pin
        self.frequency: float = args.frequency
        self.recorder = recorder
        self.ws: ClientConnection | None = None
        self.pc: RTCPeerConnection | None = None
        self.session_id = 0
        self.handle_id = 0
        self._txn = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._wants_event: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.done = asyncio.Event()

    async def _request(self, payload: dict[str, Any], *, want_event: bool = False) -> dict[str, Any]:
        assert self.ws is not None
        txn = str(next(self._txn))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[txn] = future
        if want_event:
            self._wants_event.add(txn)
        await self.ws.send(json.dumps({**payload, "transaction": txn}))
        async with asyncio.timeout(10):
            return await future

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            async for raw in self.ws:
                msg = json.loads(raw)
                kind, txn = msg.get("janus"), str(msg.get("transaction"))
                # an asynchronous request gets an ack first, then its event (or an error)
                final = kind != "ack" and (txn not in self._wants_event or kind in ("event", "error"))
                future = self._pending.pop(txn, None) if final else None
                if future is None:
                    if kind != "ack":
                        emit("janus", message=msg)
                    continue
                self._wants_event.discard(txn)
                if not future.done():
                    future.set_result(msg)
        emit("closed", code=1006, reason="janus websocket closed")
        self.done.set()

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(15)
            assert self.ws is not None
            await self.ws.send(
                json.dumps({"janus": "keepalive", "session_id": self.session_id, "transaction": "ka"})
            )

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run()))

    async def _run(self) -> None:
        try:
            t0 = time.perf_counter()
            self.ws = await open_root_ws(self.url, subprotocol="janus-protocol")
            self._tasks.append(asyncio.create_task(self._read()))
            created = await self._request({"janus": "create"})
            self.session_id = int(created["data"]["id"])
            attached = await self._request(
                {"janus": "attach", "session_id": self.session_id, "plugin": "janus.plugin.audiobridge"}
            )
            self.handle_id = int(attached["data"]["id"])
            self._tasks.append(asyncio.create_task(self._keepalive()))
            self.pc = pc = new_peer(self.frequency, self.recorder)
            offer = await gathered_offer(pc)
            body: dict[str, Any] = {"request": "join", "room": self.room, "display": "anchor", "muted": False}
            if self.pin:
                body["pin"] = self.pin
            event = await self._request(
                {
                    "janus": "message",
                    "session_id": self.session_id,
                    "handle_id": self.handle_id,
                    "body": body,
                    "jsep": {**offer, "trickle": False},
                },
                want_event=True,
            )
            jsep = event.get("jsep")
            if not jsep:
                raise RuntimeError(f"no answer from Janus: {event}")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))
            emit("joined", resume=False, joins=1, rejoin=False)
            emit("answer", ms=round((time.perf_counter() - t0) * 1000, 1), rejoin=False)
        except (
            OSError,
            TimeoutError,
            RuntimeError,
            KeyError,
            websockets.exceptions.WebSocketException,
        ) as exc:
            emit("error", stage="janus", message=repr(exc))
            self.done.set()

    async def leave(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.pc is not None:
            await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
        self.recorder.stop()


async def join_once(cmd: Mapping[str, Any], frequency: float) -> None:
    """Bench: one user's connect + join + offer -> answer, timed; then ICE, then leave."""
    recorder = Recorder(keep_s=1)
    pc = new_peer(frequency, recorder)
    rpc: RpcConnection | None = None
    try:
        offer = await gathered_offer(pc)
        t0 = time.perf_counter()
        rpc = await RpcConnection.open(cmd["url"], lambda m, p: None, origin=cmd.get("origin"))
        params = {"clientId": cmd.get("clientId") or str(uuid.uuid4())}
        if cmd.get("pin"):
            params["pin"] = cmd["pin"]
        await rpc.call("join", params)
        answer = await rpc.call("offer", {"sdp": offer})
        ms = (time.perf_counter() - t0) * 1000
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"]["sdp"], type="answer"))
        await rpc.call("icecandidate", {"candidate": {"completed": True}})
        ice_ms = await wait_ice_connected(pc, 10)
        await rpc.call("leave", timeout_s=5)
        # the gateway closes (1000) once it has left Janus and reported `left`: wait for that
        await asyncio.wait_for(asyncio.shield(rpc.closed), 5)
        emit("join_once", ms=round(ms, 2), iceMs=round(ice_ms, 1))
    except (RpcError, ConnectionError, OSError, TimeoutError, RuntimeError) as exc:
        emit("error", stage="join_once", message=str(exc), code=getattr(exc, "code", None))
    finally:
        if rpc is not None:
            await rpc.close()
        await pc.close()
        recorder.stop()


# -- main ------------------------------------------------------------------------------------


async def _commands() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run(args: argparse.Namespace) -> int:
    netns.enter(args.netns)
    emit("started", pid=os.getpid(), netns=args.netns, mode=args.mode)
    recorder = Recorder()
    anchor: GatewayAnchor | JanusAnchor | None = None
    if args.mode == "gateway":
        anchor = GatewayAnchor(args, recorder)
    elif args.mode == "janus":
        anchor = JanusAnchor(args, recorder)
    if anchor is not None:
        anchor.start()
    stdin = await _commands()
    done = asyncio.ensure_future(anchor.done.wait()) if anchor is not None else None
    while True:
        line_task = asyncio.ensure_future(stdin.readline())
        waiting = {line_task} | ({done} if done is not None else set())
        finished, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if line_task not in finished:  # the anchor gave up or was closed: report and stay for commands
            line_task.cancel()
            done = None
            continue
        line = line_task.result()
        if not line:
            break
        cmd = json.loads(line)
        name = cmd.get("cmd")
        if name == "heard":
            probe = [float(f) for f in cmd.get("probe", [])]
            emit("heard", **recorder.heard(float(cmd.get("seconds", 2)), probe))
        elif name == "join_once":
            await join_once(cmd, args.frequency)
        elif name in ("leave", "quit"):
            break
        else:
            emit("error", stage="command", message=f"unknown command {name!r}")
    if anchor is not None:
        await anchor.leave()
    emit("exit")
    return 0


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.e2e.anchor_client", description=__doc__)
    p.add_argument("--netns", required=True, help="network namespace name (or path) for WebRTC")
    p.add_argument("--frequency", type=float, default=440.0, help="tone sent, Hz")
    sub = p.add_subparsers(dest="mode", required=True)
    gw = sub.add_parser("gateway", help="an anchor through the gateway's JSON-RPC")
    gw.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/ws?token=...")
    gw.add_argument("--client-id", default=None)
    gw.add_argument("--pin", default=None)
    gw.add_argument("--origin", default=None)
    gw.add_argument("--keepalive-s", type=float, default=5.0)
    jn = sub.add_parser("janus", help="an anchor straight on Janus's WebSocket API")
    jn.add_argument("--url", required=True, help="ws://127.0.0.1:PORT (Janus WebSocket API)")
    jn.add_argument("--room", type=int, required=True, help="AudioBridge room number")
    jn.add_argument("--pin", default=None)
    sub.add_parser("bench", help="time join_once commands from stdin")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(parse(argv)))


# -- the parent's side -----------------------------------------------------------------------


class AnchorProcess:
    """An anchor subprocess: its JSON-line events in ``events``, commands with ``send``."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", "tests.e2e.anchor_client", *argv]
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._changed = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []

    @classmethod
    def gateway(
        cls, name: str, *, netns_name: str, frequency: float, url: str, pin: str | None = None, **opts: str
    ) -> AnchorProcess:
        argv = ["--netns", netns_name, "--frequency", str(frequency), "gateway", "--url", url]
        if pin is not None:
            argv += ["--pin", pin]
        for key, value in opts.items():
            argv += [f"--{key.replace('_', '-')}", value]
        return cls(name, argv)

    @classmethod
    def janus(
        cls, name: str, *, netns_name: str, frequency: float, url: str, room: int, pin: str | None
    ) -> AnchorProcess:
        argv = [
            "--netns",
            netns_name,
            "--frequency",
            str(frequency),
            "janus",
            "--url",
            url,
            "--room",
            str(room),
        ]
        if pin is not None:
            argv += ["--pin", pin]
        return cls(name, argv)

    async def start(self) -> AnchorProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
            limit=1 << 20,
        )
        self._readers = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]
        return self

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "output", "text": line.decode(errors="replace").rstrip()}
            self.events.append(event)
            self._changed.set()
        self.events.append({"event": "eof"})
        self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip())
            del self.stderr[:-200]

    async def send(self, cmd: Mapping[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    def matching(
        self, event: str, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event and (where is None or where(e))]

    async def wait_for(
        self,
        event: str,
        where: Callable[[dict[str, Any]], bool] | None = None,
        *,
        timeout_s: float = 20,
        after: int = 0,
    ) -> dict[str, Any]:
        """The first ``event`` at index >= ``after`` matching ``where``; fails on timeout or eof."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    for e in self.events[after:]:
                        if e.get("event") == event and (where is None or where(e)):
                            return e
                        if e.get("event") in ("eof", "error") and event not in ("eof", "error"):
                            raise AssertionError(f"{self.name}: {e} while waiting for {event}\n{self.tail()}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self.name}: no {event} within {timeout_s} s\n{self.tail()}") from None

    async def heard(self, seconds: float, probe: Sequence[float]) -> dict[str, Any]:
        mark = len(self.events)
        await self.send({"cmd": "heard", "seconds": seconds, "probe": list(probe)})
        return await self.wait_for("heard", after=mark, timeout_s=10)

    def tail(self) -> str:
        return "\n".join([json.dumps(e) for e in self.events[-15:]] + self.stderr[-30:])

    async def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.send({"cmd": "leave"})
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in self._readers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


if __name__ == "__main__":
    sys.exit(main())
