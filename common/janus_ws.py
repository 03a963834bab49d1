"""The Janus WebSocket API transport: one open connection, requests matched by transaction.

Shared by svc_janus (one session per connection, :mod:`svc_janus.janus_ws`) and svc_gateway
(one session per anchor, many on one connection, :mod:`svc_gateway.janus_pool`). Janus facts
this module relies on (checked against Janus 1.1.2):

- subprotocol ``janus-protocol``; every request carries a ``transaction`` that the reply
  repeats; messages without a known transaction (plugin events, ``hangup``, ``webrtcup``,
  ``media``, ``timeout`` ...) are handed to the owner's ``on_message`` callback;
- synchronous requests answer ``success`` (or ``ack`` for ``keepalive`` and ``trickle``);
  asynchronous plugin requests (join, configure, leave) answer ``ack`` first and then an
  ``event`` with the same transaction: ``call(..., wants_event=True)`` waits past the ack;
- core errors arrive as ``"janus": "error"`` (:func:`janus_error`); plugin errors arrive inside a
  "success" or "event" as ``data.error_code`` (:func:`plugin_error`, :func:`plugin_data`);
- 458 (no such session) and 459 (no such handle) mean the session is gone: :class:`SessionLost`.

A connection is never reopened: when it closes, pending requests fail with ``Unavailable`` and
:meth:`JanusConnection.wait_closed` returns; the owner decides whether and when to reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

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
    "DEFAULT_REQUEST_TIMEOUT_S",
    "SESSION_NOT_FOUND",
    "JanusConnection",
    "MessageHandler",
    "SessionLost",
    "janus_error",
    "plugin_data",
    "plugin_error",
]

logger = logging.getLogger(__name__)

AUDIOBRIDGE = "janus.plugin.audiobridge"
SUBPROTOCOL = Subprotocol("janus-protocol")
DEFAULT_REQUEST_TIMEOUT_S = 10.0
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
    """Janus no longer knows the session (it restarted, or the session timed out)."""


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


def plugin_data(reply: Mapping[str, Any], request: str) -> dict[str, Any]:
    """``plugindata.data`` of a plugin reply; its typed error if it carries one."""
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


@attrs.define
class _Pending:
    future: asyncio.Future[dict[str, Any]]
    wants_event: bool
    request: str


# Called from the reader for every message that answers no pending request. It must return
# quickly and never block: the next message (and every reply) waits for it.
MessageHandler = Callable[[dict[str, Any]], None]


class JanusConnection:
    """One WebSocket to one Janus; see the module doc. Open it with :meth:`open`."""

    def __init__(
        self,
        url: str,
        *,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        on_message: MessageHandler | None = None,
        name: str = "janus",
    ) -> None:
        self.url = url
        self.request_timeout_s = request_timeout_s
        self.name = name
        self._on_message = on_message
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, _Pending] = {}
        # A random prefix keeps transactions of two connections (and two processes) apart in
        # Janus's logs.
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)
        self._dropping = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        on_message: MessageHandler | None = None,
        name: str = "janus",
    ) -> JanusConnection:
        """Connect; ``Unavailable`` (``DependencyTimeout`` after ``request_timeout_s``) if it fails."""
        conn = cls(url, request_timeout_s=request_timeout_s, on_message=on_message, name=name)
        await conn.connect()
        return conn

    async def connect(self) -> None:
        if self._ws is not None or self._reader is not None:
            raise RuntimeError("JanusConnection.connect() called twice")
        try:
            async with asyncio.timeout(self.request_timeout_s):
                ws = await websockets.connect(
                    self.url, subprotocols=[SUBPROTOCOL], max_size=MAX_MESSAGE_BYTES, open_timeout=None
                )
        except TimeoutError:
            raise DependencyTimeout(
                f"Janus {self.url}: no connection within {self.request_timeout_s:g} s"
            ) from None
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            raise Unavailable(f"Janus {self.url}: cannot connect: {exc}", url=self.url) from exc
        self._ws = ws
        self._reader = asyncio.create_task(self._read(ws), name=f"{self.name}-reader")

    @property
    def is_open(self) -> bool:
        return self._reader is not None and not self._reader.done() and not self._dropping

    async def wait_closed(self) -> None:
        """Return once the connection is closed (by Janus, the network or :meth:`aclose`)."""
        if self._reader is not None:
            # asyncio.wait: returns when the reader ends, however it ended, and still lets a
            # cancellation of the caller through.
            await asyncio.wait({self._reader})

    def drop(self) -> None:
        """Stop reading after the current message and close (safe inside ``on_message``)."""
        self._dropping = True

    async def aclose(self) -> None:
        """Close the WebSocket (Janus then destroys its sessions) and fail pending requests."""
        self._dropping = True
        reader, ws = self._reader, self._ws
        if reader is not None and not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)
        self._fail_pending(Unavailable(f"Janus connection to {self.url} closed"))

    async def __aenter__(self) -> JanusConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- reading -----------------------------------------------------------------------------

    async def _read(self, ws: ClientConnection) -> None:
        try:
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                async for raw in ws:
                    try:
                        msg = json.loads(raw)
                    except ValueError:
                        logger.warning("Janus %s: not JSON: %.200r", self.url, raw)
                        continue
                    if isinstance(msg, dict):
                        self._dispatch(msg)
                    if self._dropping:
                        break
        finally:
            self._dropping = True
            self._fail_pending(Unavailable(f"Janus connection to {self.url} lost"))
        # Not reached when cancelled: aclose() closes the socket then.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 1.0)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        """Route one message: the reply of a pending request, or the owner's ``on_message``."""
        kind = msg.get("janus")
        txn = msg.get("transaction")
        pending = self._pending.get(txn) if isinstance(txn, str) else None
        if pending is not None:
            if kind == "ack" and pending.wants_event:
                return
            self._pending.pop(txn, None)  # type: ignore[arg-type]
            if not pending.future.done():
                pending.future.set_result(msg)
            return
        if self._on_message is not None:
            try:
                self._on_message(msg)
            except Exception:
                logger.exception("Janus %s: message handler failed", self.url)

    def _fail_pending(self, exc: AppError) -> None:
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(exc)
                # Nobody may be waiting any more (timed out): don't warn "never retrieved".
                p.future.exception()

    # -- requests ----------------------------------------------------------------------------

    async def call(
        self, payload: Mapping[str, Any], request: str, *, wants_event: bool = False
    ) -> dict[str, Any]:
        """Send ``payload`` and return the reply (the event after the ack if ``wants_event``).

        ``"janus": "error"`` replies raise their typed error (:func:`janus_error`); a closed
        connection raises ``Unavailable``, no reply within ``request_timeout_s``
        ``DependencyTimeout``.
        """
        ws = self._ws
        if ws is None or not self.is_open:
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
