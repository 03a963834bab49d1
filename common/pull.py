"""A pull consumer that hands over each message the moment it arrives.

nats-py's ``fetch(batch, timeout)`` collects a batch before it returns: when a lone event comes
in on a quiet stream it waits out the rest of the timeout for more, which adds up to a second of
latency exactly when the system is idle. Here one pull request (``batch`` messages, ``expires``)
is kept outstanding on a private inbox; messages flow into a queue as the server sends them, and
a new request goes out when the current one is used up or ends (status 404/408/409), or when
nothing was heard for longer than it could take (a request lost in a reconnect).

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
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
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
        # 404 no messages, 408 request expired, 409 consumer/leadership change: the request is over.
        if status != "408":
            logger.debug(
                "pull request of %s ended with %s %s",
                self.durable,
                status,
                msg.headers.get("Description", "") if msg.headers else "",
            )
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
                return await asyncio.wait_for(self._queue.get(), timeout_s)
            except TimeoutError:
                return None
        msg = self._queue.get_nowait()
        if self._left <= 0 and self._queue.empty():
            await self._request()
        return msg
