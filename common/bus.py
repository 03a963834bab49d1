"""NATS connection: the JetStream streams of audio-rtc, typed publishing, core request/reply.

The streams are created or updated idempotently at start (several services race to do it; the
server's answer to an identical config is a no-op). All NATS errors are translated here into
``Unavailable`` / ``DependencyTimeout`` so no caller needs to import nats.

Streams (limits are part of the public contract, see docs/asyncapi.yaml):

| stream       | subjects       | storage | retention                                      | dedup window |
| ------------ | -------------- | ------- | ---------------------------------------------- | ------------ |
| RTC_STATE    | rtc.state.>    | file    | last 16 messages per subject, at most 7 days   | 2 min        |
| RTC_EVENTS   | rtc.events.>   | file    | last 1,000 per subject, at most 24 h           | 2 min        |
| RTC_DLQ      | rtc.dlq.>      | file    | at most 7 days, 100,000 messages               | none         |

Core NATS (no stream) carries request/reply between services: ``request`` sends one and
waits for the answer; ``respond`` serves a subject (a handler's ``AppError`` becomes an error
reply, see :func:`error_reply`); ``subscribe`` delivers plain messages (also the ones published
to JetStream) to a handler. Every subject a bus subscribed to is kept in ``subscriptions``, so a
test can compare what a service really listens to with what it declares.

RTC_STATE keeps only a short history per subject: etcd holds the truth, the stream only has to
carry every change to consumers that are behind by a little, and the newest message of a
subject is always kept, so a lagging consumer still converges.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg as Message
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from common import keys
from common.errors import AppError, DependencyTimeout, Unavailable, log_error

__all__ = [
    "ERROR_CODE_HEADER",
    "ERROR_HEADER",
    "Bus",
    "Message",
    "NoResponders",
    "Responder",
    "Subscription",
    "error_reply",
    "stream_configs",
]

logger = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_REQUEST_TIMEOUT_S = 5.0
DEFAULT_DRAIN_TIMEOUT_S = 5.0
DEDUP_WINDOW_S = 120.0
DAY_S = 86_400.0


def stream_configs() -> list[StreamConfig]:
    """The stream definitions, in one place so docs, tests and the server agree."""
    return [
        StreamConfig(
            name=keys.STATE_STREAM,
            description="Every change of etcd state (put, delete, lease expiry) as JSON",
            subjects=[keys.STATE_SUBJECTS],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_msgs_per_subject=16,
            max_age=7 * DAY_S,
            duplicate_window=DEDUP_WINDOW_S,
        ),
        StreamConfig(
            name=keys.EVENTS_STREAM,
            description="Domain events that are not state: migrations, Janus restarts, users",
            subjects=[keys.EVENTS_SUBJECTS],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_msgs_per_subject=1000,
            max_age=DAY_S,
            duplicate_window=DEDUP_WINDOW_S,
        ),
        StreamConfig(
            name=keys.DLQ_STREAM,
            description="Messages a consumer could not decode, with the reason",
            subjects=[keys.DLQ_SUBJECTS],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_msgs=100_000,
            max_age=7 * DAY_S,
        ),
    ]


@attrs.frozen(kw_only=True)
class PublishResult:
    stream: str
    seq: int
    is_duplicate: bool


class NoResponders(Unavailable):
    """A request found nobody subscribed to its subject."""


def _translate(exc: BaseException, what: str) -> Exception:
    if isinstance(exc, asyncio.TimeoutError | nats.errors.TimeoutError):
        return DependencyTimeout(f"NATS did not answer: {what}", op=what)
    return Unavailable(f"NATS request failed: {what}: {type(exc).__name__}: {exc}", op=what)


# The headers of a NATS micro error reply (nats-py's nats.micro uses the same two), so
# `nats req` and micro clients show our errors the usual way.
ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"

# A responder's handler gets (subject, data) and returns the reply body.
Responder = Callable[[str, bytes], Awaitable[bytes]]


def error_reply(exc: AppError) -> tuple[bytes, dict[str, str]]:
    """The reply to a request that failed with ``exc``: body and headers.

    Body ``{"ok": false, "error": <detail>, "code": <HTTP status>, "type": <class name>}``,
    headers ``Nats-Service-Error: <detail>`` and ``Nats-Service-Error-Code: <HTTP status>``.
    """
    body = {"ok": False, "error": exc.detail, "code": exc.status_code, "type": type(exc).__name__}
    headers = {ERROR_HEADER: exc.detail, ERROR_CODE_HEADER: str(exc.status_code)}
    return json.dumps(body).encode(), headers


class Bus:
    """One NATS connection with its JetStream context.

    Use ``async with Bus.open(servers, name=...) as bus``; ``aclose()`` drains within
    ``drain_timeout_s`` (a pull subscription left open would make drain hang for 30 s, so
    owners unsubscribe theirs first).
    """

    def __init__(self, nc: NatsClient, *, request_timeout_s: float, drain_timeout_s: float) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=request_timeout_s)
        self.request_timeout_s = request_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self._reconnect_listeners: list[Callable[[], Awaitable[None] | None]] = []
        self._is_closed = False
        # every subject subscribed through this bus (tests compare it with a service's declaration)
        self.subscriptions: list[str] = []

    @classmethod
    async def connect(
        cls,
        servers: list[str],
        *,
        name: str,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
        ensure_streams: bool = True,
    ) -> Bus:
        holder: list[Bus] = []

        async def on_disconnected() -> None:
            # our own aclose() disconnects too: that is no warning
            if holder and holder[0]._is_closed:
                logger.info("NATS connection %s: connected -> disconnected (closing)", name)
            else:
                logger.warning("NATS connection %s: connected -> disconnected", name)

        async def on_reconnected() -> None:
            logger.info("NATS connection %s: disconnected -> reconnected", name)
            if holder:
                await holder[0]._notify_reconnect()

        async def on_error(exc: Exception) -> None:
            logger.warning("NATS connection %s error: %s", name, exc)

        async def on_closed() -> None:
            logger.info("NATS connection %s closed", name)

        try:
            async with asyncio.timeout(connect_timeout_s):
                nc = await nats.connect(
                    servers=servers,
                    name=name,
                    connect_timeout=connect_timeout_s,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                    error_cb=on_error,
                    closed_cb=on_closed,
                )
        except Exception as exc:
            raise Unavailable(f"cannot connect to NATS at {','.join(servers)}: {exc}") from exc
        bus = cls(nc, request_timeout_s=request_timeout_s, drain_timeout_s=drain_timeout_s)
        holder.append(bus)
        if ensure_streams:
            try:
                await bus.ensure_streams()
            except BaseException:
                await nc.close()
                raise
        return bus

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, servers: list[str], *, name: str, **kwargs: Any) -> AsyncIterator[Bus]:
        bus = await cls.connect(servers, name=name, **kwargs)
        try:
            yield bus
        finally:
            await bus.aclose()

    @property
    def is_connected(self) -> bool:
        return bool(self.nc.is_connected)

    def on_reconnect(self, listener: Callable[[], Awaitable[None] | None]) -> None:
        """Call ``listener`` after every reconnect (consumers re-create themselves and re-snapshot)."""
        self._reconnect_listeners.append(listener)

    async def _notify_reconnect(self) -> None:
        for listener in list(self._reconnect_listeners):
            try:
                result = listener()
                if result is not None:
                    await result
            except Exception:
                logger.exception("reconnect listener failed")

    async def ensure_streams(self) -> None:
        for config in stream_configs():
            await self._ensure_stream(config)

    async def _ensure_stream(self, config: StreamConfig) -> None:
        try:
            async with asyncio.timeout(self.request_timeout_s):
                try:
                    await self.js.add_stream(config)
                except nats.js.errors.BadRequestError as exc:
                    # 10058: the stream exists with another config; bring it to ours.
                    if exc.err_code != 10058:
                        raise
                    await self.js.update_stream(config)
        except Exception as exc:
            raise _translate(exc, f"ensure stream {config.name}") from exc

    async def publish(self, subject: str, payload: bytes, *, msg_id: str | None = None) -> PublishResult:
        """Publish to JetStream and wait for the stream's ack (deduplicated by ``msg_id``)."""
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        try:
            async with asyncio.timeout(self.request_timeout_s):
                ack = await self.js.publish(subject, payload, headers=headers)
        except Exception as exc:
            raise _translate(exc, f"publish {subject}") from exc
        return PublishResult(stream=ack.stream, seq=ack.seq, is_duplicate=bool(ack.duplicate))

    async def publish_many(self, messages: list[tuple[str, bytes, str | None]]) -> list[PublishResult]:
        """Publish a batch with all acks in flight at once (the relay's fast path).

        JetStream stores them in send order; the call returns when every ack is in, and raises
        if any failed (the caller then republishes the batch: ids make that harmless).
        """
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self.request_timeout_s):
                for subject, payload, msg_id in messages:
                    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
                    futures.append(await self.js.publish_async(subject, payload, headers=headers))
                acks = await asyncio.gather(*futures)
        except Exception as exc:
            for fut in futures:
                fut.cancel()
            raise _translate(exc, f"publish batch of {len(messages)}") from exc
        return [PublishResult(stream=a.stream, seq=a.seq, is_duplicate=bool(a.duplicate)) for a in acks]

    async def request(self, subject: str, payload: bytes, *, timeout_s: float | None = None) -> bytes:
        """A core-NATS request; the reply's data. ``NoResponders`` when nobody listens."""
        timeout = self.request_timeout_s if timeout_s is None else timeout_s
        try:
            msg = await self.nc.request(subject, payload, timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise NoResponders(f"no responder on {subject}", subject=subject) from exc
        except Exception as exc:
            raise _translate(exc, f"request {subject}") from exc
        return bytes(msg.data)

    async def subscribe(
        self, subject: str, handler: Callable[[Message], Awaitable[None]], *, queue: str = ""
    ) -> Subscription:
        """A core-NATS subscription (also sees JetStream publishes on its subjects).

        ``handler`` gets each message (``msg.subject``, ``msg.data``, ``await msg.respond(b)``);
        nats-py runs it in the subscription's own task, so a slow handler delays only its
        subscription. Unsubscribe with ``await sub.unsubscribe()``.
        """
        try:
            sub = await self.nc.subscribe(subject, queue=queue, cb=handler)
        except Exception as exc:
            raise _translate(exc, f"subscribe {subject}") from exc
        self.subscriptions.append(subject)
        return sub

    @contextlib.asynccontextmanager
    async def respond(self, subject: str, handler: Responder, *, queue: str = "") -> AsyncIterator[None]:
        """Answer requests on ``subject`` with ``handler(subject, data)``'s bytes while the block
        runs. An ``AppError`` is answered with :func:`error_reply`; any other exception is a
        bug: logged with its traceback, answered as a 500 "unknown error"."""

        async def on_request(msg: Message) -> None:
            headers: dict[str, str] | None = None
            try:
                body = await handler(msg.subject, msg.data)
            except AppError as exc:
                log_error(logger, exc, "request refused", subject=msg.subject)
                body, headers = error_reply(exc)
            except Exception as exc:
                log_error(logger, exc, "request handler failed", subject=msg.subject)
                bug = AppError("unknown error")
                body, headers = error_reply(bug)
            if not msg.reply:
                return  # a plain publish: nobody waits for an answer
            try:
                await self.nc.publish(msg.reply, body, headers=headers)
            except Exception as exc:
                log_error(logger, _translate(exc, f"reply on {msg.subject}"), "reply not sent")

        sub = await self.subscribe(subject, on_request, queue=queue)
        try:
            try:
                # the server has the interest once the flush returns: a request sent right
                # after the block starts finds its responder
                async with asyncio.timeout(self.request_timeout_s):
                    await self.nc.flush()
            except Exception as exc:
                raise _translate(exc, f"subscribe {subject}") from exc
            yield
        finally:
            if not self.nc.is_closed and not self.nc.is_draining:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def aclose(self) -> None:
        """Drain (bounded), then close. Idempotent."""
        if self._is_closed:
            return
        self._is_closed = True
        if self.nc.is_closed:
            return
        try:
            async with asyncio.timeout(self.drain_timeout_s):
                await self.nc.drain()
        except Exception as exc:
            logger.warning("NATS drain did not finish (%s); closing", exc)
        finally:
            if not self.nc.is_closed:
                try:
                    await self.nc.close()
                except Exception as exc:
                    # NATS went away first with bytes pending: nats-py flushes them into the dead
                    # transport, which raises ConnectionResetError (Python 3.11) or TypeError from
                    # writelines() (3.12 to 3.13.5, python/cpython#136234; Debian 13 has 3.13.5).
                    logger.warning("NATS close after a lost connection failed (%r); closed anyway", exc)
