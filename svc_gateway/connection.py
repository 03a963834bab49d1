"""One client WebSocket: read frames, run its requests in order, write replies and notifications.

Three tasks per connection, so nothing one client does can stall another:

- the **reader** (the connection's handler task) parses each text frame, applies the rate limit
  and queues requests; it answers bad frames itself and never waits for a method;
- the **worker** runs the queued requests strictly one after the other (an ``icecandidate``
  never overtakes its ``offer``); a slow Janus answer blocks only this queue;
- the **writer** sends replies and notifications from a bounded queue, in order. A client that
  does not read fills it and is closed (1008); notifications to it never wait, so the fan-out
  to the other connections of a room never waits either.

Close codes (docs/svc_gateway.md): 1003 binary frame, 1008 a client not reading, 1009 a frame
over the size limit (websockets itself), 4429 sustained flooding, and whatever a method asks for.

Rate limit: a token bucket of ``rate_per_s`` with ``burst`` tokens per connection. A message over
it is answered -32029 ``too many requests`` (or dropped, for a notification). The refusals
draw on a second bucket of the same size: a client that keeps sending at more than twice the
rate empties it and is closed with 4429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import attrs

from common.errors import AppError, TooManyRequests, log_error
from svc_gateway import jsonrpc
from svc_gateway.metrics import ERRORS, NOTIFICATIONS_DROPPED

__all__ = [
    "CLOSE_BINARY",
    "CLOSE_FLOOD",
    "CLOSE_SLOW_READER",
    "Connection",
    "ReplyThen",
    "TokenBucket",
    "Transport",
]

logger = logging.getLogger(__name__)

CLOSE_BINARY = 1003
CLOSE_SLOW_READER = 1008
CLOSE_FLOOD = 4429

DEFAULT_REQUEST_QUEUE = 32
DEFAULT_OUTGOING_QUEUE = 128
# How long a close we asked for may take (the closing handshake) before the writer is cancelled.
CLOSE_WAIT_S = 5.0


class Transport(Protocol):
    """The part of a websockets connection a Connection uses (a fake in unit tests)."""

    def __aiter__(self) -> AsyncIterator[str | bytes]: ...

    async def send(self, message: str) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@attrs.frozen
class ReplyThen:
    """A method's result, and what to do once the reply is queued (``leave`` closes after it)."""

    result: Any
    then: Callable[[], Awaitable[None]]


@attrs.frozen
class _Close:
    code: int
    reason: str


Handler = Callable[[str, Any], Awaitable[Any]]


class Connection:
    """Ordering and flow control of one WebSocket; the methods come from ``handler``."""

    def __init__(
        self,
        transport: Transport,
        *,
        conn_id: str,
        rate_per_s: float,
        burst: int,
        request_queue: int = DEFAULT_REQUEST_QUEUE,
        outgoing_queue: int = DEFAULT_OUTGOING_QUEUE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conn_id = conn_id
        self._transport = transport
        self._handler: Handler | None = None
        self._requests: asyncio.Queue[jsonrpc.Request | jsonrpc.Notification] = asyncio.Queue(request_queue)
        self._outgoing: asyncio.Queue[str | _Close] = asyncio.Queue(outgoing_queue)
        self._bucket = TokenBucket(rate_per_s, burst, clock=clock)
        self._refusals = TokenBucket(rate_per_s, burst, clock=clock)
        self._close: _Close | None = None
        self._close_task: asyncio.Task[None] | None = None
        self.log = logger.getChild(conn_id[:8])

    def set_handler(self, handler: Handler) -> None:
        self._handler = handler

    @property
    def is_closing(self) -> bool:
        return self._close is not None

    @property
    def close_code(self) -> int | None:
        return None if self._close is None else self._close.code

    # -- sending: never waits ------------------------------------------------------------

    def _put(self, text: str) -> None:
        if self._close is not None:
            return
        try:
            self._outgoing.put_nowait(text)
        except asyncio.QueueFull:
            NOTIFICATIONS_DROPPED.inc()
            self.log.info("client does not read its messages: closing")
            self._close_now(CLOSE_SLOW_READER, "client does not read its messages")

    def notify(self, method: str, params: Any) -> None:
        self._put(jsonrpc.encode_notification(method, params))

    def _reply_error(self, rpc_id: jsonrpc.RpcId | None, exc: BaseException) -> None:
        ERRORS.labels(code=str(jsonrpc.error_payload(exc)["code"])).inc()
        self._put(jsonrpc.encode_error(rpc_id, exc))

    def close(self, code: int, reason: str) -> None:
        """Close after everything queued so far is sent (a reply before a ``leave`` close)."""
        if self._close is not None:
            return
        if code >= 4000:
            ERRORS.labels(code=str(code)).inc()
        try:
            self._outgoing.put_nowait(_Close(code, reason))
        except asyncio.QueueFull:
            self._close_now(code, reason)
            return
        self._close = _Close(code, reason)

    def _close_now(self, code: int, reason: str) -> None:
        self._close = _Close(code, reason)
        self._close_task = asyncio.create_task(self._transport.close(code, reason))

    # -- the three loops -----------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes; the handler must be set."""
        writer = asyncio.create_task(self._write(), name=f"ws-writer-{self.conn_id[:8]}")
        worker = asyncio.create_task(self._work(), name=f"ws-worker-{self.conn_id[:8]}")
        try:
            await self._read()
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            if self._close is not None and not writer.done():
                # our close is in flight: let the writer finish the closing handshake
                with contextlib.suppress(TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(writer), CLOSE_WAIT_S)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            if self._close_task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._close_task

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            # websockets ends the iteration on a normal close and raises ConnectionClosedError
            # on an abnormal one (1009 too): either way the connection is over.
            async for message in self._transport:
                if self._close is not None:
                    continue  # closing: what still arrives is dropped
                if isinstance(message, bytes):
                    self.close(CLOSE_BINARY, "binary frames are not supported")
                    continue
                self._on_text(message)

    def _on_text(self, text: str) -> None:
        parsed = jsonrpc.parse_message(text)
        rpc_id = parsed.id if isinstance(parsed, jsonrpc.Request) else None
        if not self._bucket.take():
            if not self._refusals.take():
                self.log.info("flooding: closing")
                self.close(CLOSE_FLOOD, "too many requests")
            elif isinstance(parsed, jsonrpc.Request):
                self._reply_error(rpc_id, TooManyRequests("too many requests"))
            return
        if isinstance(parsed, tuple):
            error, error_id = parsed
            self._reply_error(error_id, error)
            return
        try:
            self._requests.put_nowait(parsed)
        except asyncio.QueueFull:
            if isinstance(parsed, jsonrpc.Request):
                self._reply_error(rpc_id, TooManyRequests("too many requests"))

    async def _work(self) -> None:
        assert self._handler is not None
        while True:
            item = await self._requests.get()
            if self._close is not None:
                continue
            is_request = isinstance(item, jsonrpc.Request)
            try:
                result = await self._handler(item.method, item.params)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not isinstance(exc, AppError) or exc.log_level > logging.INFO:
                    log_error(self.log, exc, f"method {item.method}")
                if isinstance(item, jsonrpc.Request):
                    self._reply_error(item.id, exc)
                continue
            then = None
            if isinstance(result, ReplyThen):
                result, then = result.result, result.then
            if is_request:
                assert isinstance(item, jsonrpc.Request)
                self._put(jsonrpc.encode_result(item.id, result))
            if then is not None:
                try:
                    await then()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log_error(self.log, exc, f"after method {item.method}")

    async def _write(self) -> None:
        while True:
            item = await self._outgoing.get()
            if isinstance(item, _Close):
                await self._transport.close(item.code, item.reason)
                return
            await self._transport.send(item)
