"""The Janus client of svc_janus: one connection, one session and its AudioBridge handle.

The transport (connection, transaction matching, ack-then-event, typed errors) is
:mod:`common.janus_ws`, shared with the gateway. Facts this client adds (Janus 1.1.2):

- a session dies after ``session_timeout`` seconds without a request (``info`` reports it), so
  keepalives go out every ``min(keepalive_interval_s, session_timeout / 3)``;
- Janus destroys a session when its WebSocket closes; after a Janus restart every session id
  is unknown (error 458). Plugin state (AudioBridge rooms) survives a WebSocket drop but not a
  restart, which is why the owner is told about every new session (``on_session``) and checks.

The client reconnects by itself (backoff 0.1 s doubling to 2 s) and opens a new session and
AudioBridge handle each time. Requests made while it is disconnected fail at once with
``Unavailable``: retrying is the caller's scheduler's job. Every request runs under
``request_timeout_s`` (``DependencyTimeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import websockets

from common.backoff import Backoff
from common.errors import AppError, DependencyTimeout, Unavailable
from common.janus_ws import (
    AUDIOBRIDGE,
    DEFAULT_REQUEST_TIMEOUT_S,
    JanusConnection,
    SessionLost,
    janus_error,
    plugin_data,
    plugin_error,
)

__all__ = [
    "AUDIOBRIDGE",
    "DEFAULT_KEEPALIVE_INTERVAL_S",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "JanusClient",
    "SessionInfo",
    "SessionLost",
    "janus_error",
    "plugin_error",
]

logger = logging.getLogger(__name__)

DEFAULT_KEEPALIVE_INTERVAL_S = 15.0
RECONNECT_MAX_S = 2.0


@attrs.frozen
class SessionInfo:
    """A Janus session this client opened; ``number`` counts sessions since the client started."""

    session_id: int
    handle_id: int
    number: int
    session_timeout_s: float


SessionListener = Callable[[SessionInfo], Awaitable[None] | None]
EventListener = Callable[[dict[str, Any]], None]


class JanusClient:
    """One WebSocket to one Janus, a session on it and an AudioBridge handle; see the module doc."""

    def __init__(
        self,
        url: str,
        *,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        keepalive_interval_s: float = DEFAULT_KEEPALIVE_INTERVAL_S,
        on_session: SessionListener | None = None,
        on_event: EventListener | None = None,
        name: str = "janus",
    ) -> None:
        self.url = url
        self.request_timeout_s = request_timeout_s
        self.keepalive_interval_s = keepalive_interval_s
        self.name = name
        self._on_session = on_session
        self._on_event = on_event
        self._conn: JanusConnection | None = None
        self._session: SessionInfo | None = None
        self._connected = asyncio.Event()
        self._sessions = 0
        self._task: asyncio.Task[None] | None = None
        self._is_closed = False
        self.keepalives_sent = 0

    # -- state -------------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set() and self._session is not None

    @property
    def session(self) -> SessionInfo | None:
        """The current session, or None while disconnected."""
        return self._session if self.is_connected else None

    @property
    def effective_keepalive_s(self) -> float:
        timeout = self._session.session_timeout_s if self._session else 0.0
        if timeout > 0:
            return min(self.keepalive_interval_s, timeout / 3)
        return self.keepalive_interval_s

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background (idempotent); see :meth:`wait_connected`."""
        if self._is_closed:
            raise RuntimeError("JanusClient is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.name}-connection")

    async def wait_connected(self, timeout_s: float) -> SessionInfo:
        """Wait until a session is open; ``DependencyTimeout`` if none within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    await self._connected.wait()
                    if self._session is not None:
                        return self._session
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise DependencyTimeout(f"no Janus session at {self.url} within {timeout_s:g} s") from None

    async def aclose(self) -> None:
        """Close the connection (Janus then drops the session) and stop reconnecting."""
        self._is_closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> JanusClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- connection loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        # Cap 2 s, not 10: a restarted Janus has lost every AudioBridge room, and they are rebuilt
        # only once this client has a new session.
        backoff = Backoff(max_s=RECONNECT_MAX_S)
        while not self._is_closed:
            try:
                await self._connect_once()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except (OSError, AppError, websockets.exceptions.WebSocketException, TimeoutError) as exc:
                logger.warning(
                    "Janus %s: connection failed: %s; retrying in %.1f s", self.url, exc, backoff.delay_s
                )
            except Exception:
                logger.exception("Janus %s: unexpected error in the connection loop", self.url)
            finally:
                self._connected.clear()
                self._session = None
            if self._is_closed:
                break
            await asyncio.sleep(backoff.next())

    async def _connect_once(self) -> None:
        conn = JanusConnection(
            self.url, request_timeout_s=self.request_timeout_s, on_message=self._dispatch, name=self.name
        )
        keepalive: asyncio.Task[None] | None = None
        try:
            await conn.connect()
            self._conn = conn
            self._connected.set()
            info = await conn.call({"janus": "info"}, "info")
            timeout_s = float(info.get("session-timeout", 0) or 0)
            created = await conn.call({"janus": "create"}, "create")
            session_id = int(created["data"]["id"])
            attached = await conn.call(
                {"janus": "attach", "session_id": session_id, "plugin": AUDIOBRIDGE}, "attach"
            )
            self._sessions += 1
            self._session = SessionInfo(
                session_id=session_id,
                handle_id=int(attached["data"]["id"]),
                number=self._sessions,
                session_timeout_s=timeout_s,
            )
            logger.info(
                "Janus %s: session %d open (#%d, session timeout %g s)",
                self.url,
                session_id,
                self._sessions,
                timeout_s,
            )
            keepalive = asyncio.create_task(self._keepalive(conn), name=f"{self.name}-keepalive")
            if self._on_session is not None:
                result = self._on_session(self._session)
                if inspect.isawaitable(result):
                    await result
            await conn.wait_closed()
        finally:
            self._connected.clear()
            if keepalive is not None and not keepalive.done():
                keepalive.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await keepalive
            self._conn = None
            await conn.aclose()
            if not self._is_closed:
                logger.warning("Janus %s: connection closed", self.url)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        """An unsolicited message: our session timing out drops the connection, the rest is
        the owner's."""
        session = self._session
        if (
            msg.get("janus") == "timeout"
            and session is not None
            and msg.get("session_id") == session.session_id
        ):
            logger.warning("Janus %s: session %d timed out; reconnecting", self.url, session.session_id)
            if self._conn is not None:
                self._conn.drop()
            return
        if self._on_event is not None:
            try:
                self._on_event(msg)
            except Exception:
                logger.exception("Janus event listener failed")

    async def _keepalive(self, conn: JanusConnection) -> None:
        while True:
            await asyncio.sleep(self.effective_keepalive_s)
            session = self._session
            if session is None:
                return
            try:
                await conn.call({"janus": "keepalive", "session_id": session.session_id}, "keepalive")
                self.keepalives_sent += 1
            except SessionLost:
                logger.warning("Janus %s: session %d is gone; reconnecting", self.url, session.session_id)
                await conn.aclose()
                return
            except AppError as exc:
                logger.warning("Janus %s: keepalive failed: %s", self.url, exc)

    # -- requests ----------------------------------------------------------------------------

    async def _call(
        self, payload: dict[str, Any], request: str, *, wants_event: bool = False
    ) -> dict[str, Any]:
        conn = self._conn
        if conn is None or not self._connected.is_set():
            raise Unavailable(f"Janus {request}: not connected to {self.url}", request=request)
        return await conn.call(payload, request, wants_event=wants_event)

    def _handle_payload(self, handle_id: int | None) -> dict[str, Any]:
        session = self._session
        if session is None:
            raise Unavailable(f"no Janus session at {self.url}")
        return {"session_id": session.session_id, "handle_id": handle_id or session.handle_id}

    async def info(self) -> dict[str, Any]:
        """The server's ``info`` reply (no session needed)."""
        return await self._call({"janus": "info"}, "info")

    async def attach(self, plugin: str = AUDIOBRIDGE) -> int:
        """Attach another handle to the current session (valid until the session changes)."""
        session = self._session
        if session is None:
            raise Unavailable(f"no Janus session at {self.url}")
        reply = await self._call(
            {"janus": "attach", "session_id": session.session_id, "plugin": plugin}, "attach"
        )
        return int(reply["data"]["id"])

    async def detach(self, handle_id: int) -> None:
        await self._call({"janus": "detach", **self._handle_payload(handle_id)}, "detach")

    async def message(self, body: Mapping[str, Any], *, handle_id: int | None = None) -> dict[str, Any]:
        """A synchronous plugin request; returns ``plugindata.data`` or raises its typed error."""
        request = str(body.get("request", "?"))
        reply = await self._call(
            {"janus": "message", **self._handle_payload(handle_id), "body": dict(body)}, request
        )
        return plugin_data(reply, request)

    async def message_async(
        self,
        body: Mapping[str, Any],
        *,
        handle_id: int | None = None,
        jsep: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An asynchronous plugin request (ack, then event): the event's data (+ ``jsep``)."""
        request = str(body.get("request", "?"))
        payload: dict[str, Any] = {"janus": "message", **self._handle_payload(handle_id), "body": dict(body)}
        if jsep is not None:
            payload["jsep"] = dict(jsep)
        reply = await self._call(payload, request, wants_event=True)
        data = plugin_data(reply, request)
        if "jsep" in reply:
            data = {**data, "jsep": reply["jsep"]}
        return data
