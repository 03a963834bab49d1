"""The Janus WebSocket API client: one connection, one session, requests matched by transaction.

Janus facts this module relies on (checked against Janus 1.1.2):

- subprotocol ``janus-protocol``; ``create`` -> ``data.id`` (session), ``attach`` -> ``data.id``
  (handle); every request carries a ``transaction`` that the reply repeats;
- synchronous plugin requests answer ``"janus": "success"`` with ``plugindata.data``; plugin
  errors arrive inside that "success" as ``data.error_code`` and are raised here as typed
  errors (:func:`plugin_error`); asynchronous requests (join, configure, leave) answer ``ack``
  first and then an ``event`` with the same transaction;
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
import itertools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from common.backoff import Backoff
from common.errors import (
    AppError,
    Conflict,
    DependencyTimeout,
    InvalidInput,
    NotFound,
    Unauthorized,
    Unavailable,
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

AUDIOBRIDGE = "janus.plugin.audiobridge"
SUBPROTOCOL = Subprotocol("janus-protocol")
DEFAULT_REQUEST_TIMEOUT_S = 10.0
DEFAULT_KEEPALIVE_INTERVAL_S = 15.0
RECONNECT_MAX_S = 2.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# Janus core error codes (janus/apierror.h) that mean "this session is gone".
SESSION_NOT_FOUND = 458
HANDLE_NOT_FOUND = 459

# AudioBridge error codes (plugins/janus_audiobridge.c, 1.1.2) -> our error classes.
_PLUGIN_ERRORS: Mapping[int, type[AppError]] = {
    480: InvalidInput,  # no message
    481: InvalidInput,  # invalid JSON
    482: InvalidInput,  # invalid request (e.g. an unknown request name)
    483: InvalidInput,  # missing element (e.g. admin_key)
    484: InvalidInput,  # invalid element
    485: NotFound,  # no such room
    486: Conflict,  # room exists
    487: InvalidInput,  # not joined
    488: Unavailable,  # libopus error
    489: Unauthorized,  # wrong secret, pin or admin_key
    490: Conflict,  # participant id exists
    491: Conflict,  # already joined
    492: NotFound,  # no such user
    493: InvalidInput,  # invalid SDP
    494: NotFound,  # no such group
}
# Janus core error codes -> our error classes (anything else: Unavailable).
_CORE_ERRORS: Mapping[int, type[AppError]] = {
    403: Unauthorized,
    405: Unauthorized,
    452: InvalidInput,
    453: InvalidInput,
    454: InvalidInput,
    455: InvalidInput,
    456: InvalidInput,
    457: InvalidInput,
    460: NotFound,
    465: InvalidInput,
    466: InvalidInput,
}


class SessionLost(Unavailable):
    """Janus no longer knows our session (it restarted, or the session timed out)."""


def plugin_error(data: Mapping[str, Any], request: str) -> AppError | None:
    """The typed error inside a plugin's "success" reply, or None if it is a real success."""
    code = data.get("error_code")
    if code is None:
        return None
    reason = str(data.get("error", ""))
    cls = _PLUGIN_ERRORS.get(int(code), Unavailable)
    return cls(f"Janus {request}: {reason or 'error'}", janus_code=int(code), request=request)


def janus_error(reply: Mapping[str, Any], request: str) -> AppError:
    """The typed error of a ``"janus": "error"`` reply."""
    err = reply.get("error") or {}
    code = int(err.get("code", 0))
    reason = str(err.get("reason", ""))
    if code in (SESSION_NOT_FOUND, HANDLE_NOT_FOUND):
        return SessionLost(f"Janus {request}: {reason}", janus_code=code, request=request)
    cls = _CORE_ERRORS.get(code, Unavailable)
    return cls(f"Janus {request}: {reason or 'error'}", janus_code=code, request=request)


@attrs.frozen
class SessionInfo:
    """A Janus session this client opened; ``number`` counts sessions since the client started."""

    session_id: int
    handle_id: int
    number: int
    session_timeout_s: float


@attrs.define
class _Pending:
    future: asyncio.Future[dict[str, Any]]
    wants_event: bool
    request: str


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
        self._ws: ClientConnection | None = None
        self._session: SessionInfo | None = None
        self._connected = asyncio.Event()
        self._pending: dict[str, _Pending] = {}
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)
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
                self._fail_pending(Unavailable(f"Janus connection to {self.url} lost"))
            if self._is_closed:
                break
            await asyncio.sleep(backoff.next())

    async def _connect_once(self) -> None:
        async with asyncio.timeout(self.request_timeout_s):
            ws = await websockets.connect(
                self.url, subprotocols=[SUBPROTOCOL], max_size=MAX_MESSAGE_BYTES, open_timeout=None
            )
        self._ws = ws
        reader = asyncio.create_task(self._read(ws), name=f"{self.name}-reader")
        keepalive: asyncio.Task[None] | None = None
        try:
            self._connected.set()
            info = await self._call({"janus": "info"}, "info")
            timeout_s = float(info.get("session-timeout", 0) or 0)
            created = await self._call({"janus": "create"}, "create")
            session_id = int(created["data"]["id"])
            attached = await self._call(
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
            keepalive = asyncio.create_task(self._keepalive(ws), name=f"{self.name}-keepalive")
            if self._on_session is not None:
                result = self._on_session(self._session)
                if inspect.isawaitable(result):
                    await result
            await reader
        finally:
            self._connected.clear()
            for task in (keepalive, reader):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            self._ws = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)
            if not self._is_closed:
                logger.warning("Janus %s: connection closed", self.url)

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    logger.warning("Janus %s: not JSON: %.200r", self.url, raw)
                    continue
                if isinstance(msg, dict) and not self._dispatch(msg):
                    return

    def _dispatch(self, msg: dict[str, Any]) -> bool:
        """Route one message; False when the connection must be dropped (session timed out)."""
        kind = msg.get("janus")
        txn = msg.get("transaction")
        pending = self._pending.get(txn) if isinstance(txn, str) else None
        if pending is not None:
            if kind == "ack" and pending.wants_event:
                return True
            self._pending.pop(txn, None)  # type: ignore[arg-type]
            if not pending.future.done():
                pending.future.set_result(msg)
            return True
        session = self._session
        if kind == "timeout" and session is not None and msg.get("session_id") == session.session_id:
            logger.warning("Janus %s: session %d timed out; reconnecting", self.url, session.session_id)
            return False
        if self._on_event is not None:
            try:
                self._on_event(msg)
            except Exception:
                logger.exception("Janus event listener failed")
        return True

    def _fail_pending(self, exc: AppError) -> None:
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(exc)
                # Nobody may be waiting any more (timed out): don't warn "never retrieved".
                p.future.exception()

    async def _keepalive(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.effective_keepalive_s)
            session = self._session
            if session is None:
                return
            try:
                await self._call({"janus": "keepalive", "session_id": session.session_id}, "keepalive")
                self.keepalives_sent += 1
            except SessionLost:
                logger.warning("Janus %s: session %d is gone; reconnecting", self.url, session.session_id)
                await ws.close()
                return
            except AppError as exc:
                logger.warning("Janus %s: keepalive failed: %s", self.url, exc)

    # -- requests ----------------------------------------------------------------------------

    async def _call(
        self, payload: dict[str, Any], request: str, *, wants_event: bool = False
    ) -> dict[str, Any]:
        ws = self._ws
        if ws is None or not self._connected.is_set():
            raise Unavailable(f"Janus {request}: not connected to {self.url}", request=request)
        txn = f"{self._prefix}-{next(self._counter)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[txn] = _Pending(future, wants_event, request)
        try:
            async with asyncio.timeout(self.request_timeout_s):
                await ws.send(json.dumps({**payload, "transaction": txn}))
                reply = await future
        except TimeoutError:
            raise DependencyTimeout(
                f"Janus {request}: no answer within {self.request_timeout_s:g} s", request=request
            ) from None
        except websockets.exceptions.ConnectionClosed as exc:
            raise Unavailable(f"Janus {request}: connection closed", request=request) from exc
        finally:
            self._pending.pop(txn, None)
        if reply.get("janus") == "error":
            raise janus_error(reply, request)
        return reply

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
        return _plugin_data(reply, request)

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
        data = _plugin_data(reply, request)
        if "jsep" in reply:
            data = {**data, "jsep": reply["jsep"]}
        return data


def _plugin_data(reply: Mapping[str, Any], request: str) -> dict[str, Any]:
    plugindata = reply.get("plugindata")
    if not isinstance(plugindata, Mapping) or not isinstance(plugindata.get("data"), Mapping):
        raise Unavailable(
            f"Janus {request}: reply without plugin data", request=request, reply=str(reply)[:200]
        )
    data = dict(plugindata["data"])
    error = plugin_error(data, request)
    if error is not None:
        raise error
    return data
