"""A pull consumer that hands over each message the moment it arrives.

nats-py's ``fetch(batch, timeout)`` collects a batch before it returns: when a lone event comes
in on a quiet stream it waits out the rest of the timeout for more, which adds up to a second of
latency exactly when the system is idle. Here one pull request (``batch`` messages, ``expires``)
is kept outstanding on a private inbox; messages flow into a queue as the server sends them, and
a new request goes out when the current one is used up or ends (status 408 expired, 409 other
than a deleted consumer), or when nothing was heard for longer than it could take (a request lost
in a reconnect).

A consumer that is gone (409 "Consumer Deleted" on the outstanding request, 503 no responders or
404 on a new one) is not the end of a request: ``next`` raises ``Unavailable`` so the owner
recreates the consumer and re-reads the state it missed (the reconcile runtime re-snapshots).

The queue is fed by a subscription callback, so waiting on it is cancellable at any point
(cancelling nats-py's own ``next_msg`` can leave its helper task stuck).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from common.bus import Bus
from common.errors import Unavailable

__all__ = ["PullStream"]

logger = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
BATCH = 256
EXPIRES_S = 30.0


class PullStream:
    """Messages of the durable pull consumer ``durable`` on ``stream``, as they arrive."""

    def __init__(self, bus: Bus, *, stream: str, durable: str) -> None:
        self.bus = bus
        self.stream = stream
        self.durable = durable
        # Messages, or the error that ends the stream (queued so a waiting next() wakes up).
        self._queue: asyncio.Queue[Msg | Unavailable] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._inbox = ""
        self._left = 0  # messages the outstanding request may still deliver
        self._last_heard = 0.0

    async def start(self) -> None:
        if self._sub is not None:
            return
        self._inbox = self.bus.nc.new_inbox()
        try:
            self._sub = await self.bus.nc.subscribe(self._inbox, cb=self._on_msg)
        except Exception as exc:
            raise Unavailable(f"cannot subscribe for consumer {self.durable}: {exc}") from exc
        await self._request()

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        self._last_heard = time.monotonic()
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._left -= 1
            self._queue.put_nowait(msg)
            return
        if status == "100":  # idle heartbeat: the request is alive
            return
        description = msg.headers.get("Description", "") if msg.headers else ""
        if _consumer_is_gone(status, description):
            self._left = 0
            self._queue.put_nowait(
                Unavailable(
                    f"consumer {self.durable} on {self.stream} is gone",
                    status=status,
                    description=description.strip().splitlines()[0] if description.strip() else "",
                )
            )
            return
        # 408 request expired, 409 leadership change or a limit: the request is over.
        if status != "408":
            logger.debug("pull request of %s ended with %s %s", self.durable, status, description)
        self._left = 0

    async def _request(self) -> None:
        body = {
            "batch": BATCH,
            "expires": int(EXPIRES_S * 1e9),
            "idle_heartbeat": int(HEARTBEAT_S * 1e9),
        }
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}"
        try:
            await self.bus.nc.publish(subject, json.dumps(body).encode(), reply=self._inbox)
        except Exception as exc:
            raise Unavailable(f"cannot request messages of {self.durable}: {exc}") from exc
        self._left = BATCH
        self._last_heard = time.monotonic()

    async def next(self, timeout_s: float) -> Msg | None:
        """The next message, or None after ``timeout_s`` (keeps a request outstanding meanwhile)."""
        if self._sub is None:
            raise Unavailable(f"pull stream of {self.durable} is not started")
        if self._queue.empty():
            # Silence longer than two heartbeats: the request was lost (reconnect); ask again.
            if self._left <= 0 or time.monotonic() - self._last_heard > 2 * HEARTBEAT_S + 1:
                await self._request()
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout_s)
            except TimeoutError:
                return None
            return _message(item)
        msg = _message(self._queue.get_nowait())
        if self._left <= 0 and self._queue.empty():
            await self._request()
        return msg


def _message(item: Msg | Unavailable) -> Msg:
    if isinstance(item, Unavailable):
        raise item
    return item


def _consumer_is_gone(status: str, description: str) -> bool:
    """Whether a status on the inbox says the consumer no longer exists (not just a request over).

    409 "Consumer Deleted" answers the outstanding request when the consumer is deleted; a new
    request to a missing consumer has no responder (503) or, on some servers, 404 "No Consumers".
    404 "No Messages" answers only ``no_wait`` requests, which this stream never sends.
    """
    if status == "409":
        return description.strip().lower() == "consumer deleted"
    if status == "503":
        return True
    return status == "404" and description.strip().lower() != "no messages"
