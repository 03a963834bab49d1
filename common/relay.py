"""The state relay: every etcd change becomes a state event, even when its writer never said so.

Writers publish right after their commit; the relay is the safety net. It watches the whole
keyspace from its own checkpoint (the last etcd revision it has published, in the NATS KV
bucket ``rtc_relay``) and publishes each change under the message id ``<key>@<revision>``, the
same id the writer used, so JetStream keeps one copy. Lease expiries (a dead module's heartbeat)
only ever reach NATS through here.

Why its own checkpoint and not the newest stream message: writers publish directly and run
ahead of the relay, so the stream's tail says nothing about what the relay has covered.
If etcd has compacted past the checkpoint, the relay publishes a full snapshot (puts of every
current key) and goes on from the snapshot's revision; deletes lost in the gap are caught by the
consumers' periodic resync against etcd. Several relays may run at once: dedup makes it safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

import attrs
import nats.js.errors
from nats.js.kv import KeyValue

from common import records
from common.backoff import Backoff
from common.bus import Bus
from common.errors import AppError, InvalidInput, Unavailable, log_error
from common.etcd import Compacted, EtcdStore, WatchEvent
from common.keys import Keyspace
from common.state import state_event_message
from common.supervisor import SupervisedTask

__all__ = ["StateRelay"]

logger = logging.getLogger(__name__)

CHECKPOINT_BUCKET = "rtc_relay"
DEFAULT_BATCH = 512
DEFAULT_CHECKPOINT_INTERVAL_S = 0.2
RETRY_MAX_S = 5.0


@attrs.define
class RelayStats:
    published: int = 0
    snapshots: int = 0
    checkpoint: int = 0


class StateRelay:
    """Watch etcd from the checkpoint and publish what is missing on ``rtc.state.>``."""

    def __init__(
        self,
        *,
        etcd: EtcdStore,
        bus: Bus,
        keyspace: Keyspace,
        name: str = "main",
        batch: int = DEFAULT_BATCH,
        checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S,
    ) -> None:
        self.etcd = etcd
        self.bus = bus
        self.keyspace = keyspace
        self.name = name
        self.batch = batch
        self.checkpoint_interval_s = checkpoint_interval_s
        self.stats = RelayStats()
        self._kv: KeyValue | None = None
        self._task: SupervisedTask | None = None
        self._caught_up = asyncio.Event()
        # Every keyspace prefix starts with "/", so their common prefix covers all state keys;
        # character-wise on purpose: etcd prefixes are byte strings, not paths.
        self._watch_prefix = os.path.commonprefix(  # noqa: RUF071
            [keyspace.prefix(c) for c in ("rooms", "januses", "mixers")]
        )

    @property
    def is_running(self) -> bool:
        """The relay loop runs (it retries outages itself; a bug ending it is restarted, and
        this is False until then)."""
        return self._task is not None and self._task.is_running

    @property
    def checkpoint_key(self) -> str:
        return f"checkpoint.{self.name}"

    async def start(self) -> None:
        if self._task is None:
            self._task = SupervisedTask(f"relay-{self.name}", self._run)
            self._task.start()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await task.stop()

    async def __aenter__(self) -> StateRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_caught_up(self, timeout_s: float) -> None:
        """Wait until the relay has published everything etcd had when it started watching."""
        async with asyncio.timeout(timeout_s):
            await self._caught_up.wait()

    async def _checkpoint_kv(self) -> KeyValue:
        if self._kv is None:
            try:
                async with asyncio.timeout(self.bus.request_timeout_s):
                    try:
                        self._kv = await self.bus.js.key_value(CHECKPOINT_BUCKET)
                    except nats.js.errors.BucketNotFoundError:
                        self._kv = await self.bus.js.create_key_value(
                            bucket=CHECKPOINT_BUCKET,
                            description="Last etcd revision each state relay has published",
                            history=1,
                        )
            except Exception as exc:
                raise Unavailable(f"relay checkpoint bucket unavailable: {exc}") from exc
        return self._kv

    async def load_checkpoint(self) -> int | None:
        kv = await self._checkpoint_kv()
        try:
            async with asyncio.timeout(self.bus.request_timeout_s):
                entry = await kv.get(self.checkpoint_key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except Exception as exc:
            raise Unavailable(f"cannot read relay checkpoint: {exc}") from exc
        try:
            return int((entry.value or b"").decode())
        except ValueError:
            logger.warning("relay checkpoint %r is not a revision; starting from a snapshot", entry.value)
            return None

    async def save_checkpoint(self, revision: int) -> None:
        kv = await self._checkpoint_kv()
        try:
            async with asyncio.timeout(self.bus.request_timeout_s):
                await kv.put(self.checkpoint_key, str(revision).encode())
        except Exception as exc:
            raise Unavailable(f"cannot save relay checkpoint: {exc}") from exc
        self.stats.checkpoint = revision

    async def _run(self) -> None:
        # Cap 5 s, not 10: lease expiries (dead modules) reach NATS only through the relay, and it
        # never resets its attempts, so the cap is its wait after any later interruption.
        # Jitter: several relays may run at once and all meet the same outage.
        backoff = Backoff(max_s=RETRY_MAX_S, jitter=0.5)
        while True:
            try:
                checkpoint = await self.load_checkpoint()
                if checkpoint is None:
                    checkpoint = await self.publish_snapshot()
                await self._follow(checkpoint)
            except asyncio.CancelledError:
                raise
            except Compacted as exc:
                logger.warning("relay checkpoint compacted away (%s); publishing a snapshot", exc)
                with contextlib.suppress(AppError):
                    await self.save_checkpoint(await self.publish_snapshot())
                continue
            except Exception as exc:
                log_error(
                    logger, exc, "state relay interrupted; retrying", retry_in_s=round(backoff.delay_s, 2)
                )
            await asyncio.sleep(backoff.next())

    async def publish_snapshot(self) -> int:
        """Publish a put for every current key; returns the snapshot's revision (saved as checkpoint)."""
        snap = await self.etcd.get_prefix(self._watch_prefix)
        messages: list[tuple[str, bytes, str | None]] = []
        for kv in snap.kvs:
            message = self._message(kv.key, "put", kv.mod_revision, kv.value)
            if message is not None:
                messages.append(message)
        for i in range(0, len(messages), self.batch):
            await self.bus.publish_many(messages[i : i + self.batch])
        self.stats.published += len(messages)
        self.stats.snapshots += 1
        await self.save_checkpoint(snap.revision)
        logger.info(
            "relay %s published a snapshot of %d keys at revision %d", self.name, len(messages), snap.revision
        )
        return snap.revision

    def _message(
        self, key: str, op: str, revision: int, value: bytes
    ) -> tuple[str, bytes, str | None] | None:
        skey = self.keyspace.parse(key)
        if skey is None:
            return None
        record_value = None
        if op == "put":
            try:
                record_value = records.unstructure(records.decode_record(skey.kind, value, key=key))
            except InvalidInput as exc:
                # Consumers would reject it too; etcd keeps it for a human to look at.
                log_error(logger, exc, "relay skips an undecodable value", key=key, revision=revision)
                return None
        state_op = records.StateOp.PUT if op == "put" else records.StateOp.DELETE
        return state_event_message(self.keyspace, skey, op=state_op, revision=revision, value=record_value)

    async def _follow(self, checkpoint: int) -> None:
        """Watch from checkpoint + 1, publishing in batches and saving the checkpoint as it goes."""
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue(maxsize=self.batch * 8)
        target = await self.etcd.revision(self._watch_prefix)
        if target <= checkpoint:
            self._caught_up.set()

        async def read() -> None:
            async for event in self.etcd.watch_with_resume(self._watch_prefix, start_revision=checkpoint + 1):
                await queue.put(event)

        reader = asyncio.create_task(read(), name=f"relay-{self.name}-watch")
        last_saved = last_rev = checkpoint
        last_save_at = time.monotonic()
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {get, reader}, return_when=asyncio.FIRST_COMPLETED, timeout=self.checkpoint_interval_s
                )
                if reader in done:
                    get.cancel()
                    reader.result()  # re-raise Compacted / Unavailable
                    raise Unavailable("etcd watch ended")
                events: list[WatchEvent] = []
                if get in done:
                    events.append(get.result())
                    while len(events) < self.batch and not queue.empty():
                        events.append(queue.get_nowait())
                else:
                    get.cancel()
                if events:
                    messages = [
                        m for e in events if (m := self._message(e.key, e.op, e.mod_revision, e.value))
                    ]
                    if messages:
                        await self.bus.publish_many(messages)
                        self.stats.published += len(messages)
                    # One revision can span batches (a prefix delete): claim it only when idle.
                    last_rev = events[-1].mod_revision
                    checkpoint = max(checkpoint, last_rev - 1)
                elif last_rev > checkpoint:
                    checkpoint = last_rev
                if checkpoint >= target:
                    self._caught_up.set()
                now = time.monotonic()
                if checkpoint != last_saved and (
                    now - last_save_at >= self.checkpoint_interval_s or not events
                ):
                    await self.save_checkpoint(checkpoint)
                    last_saved, last_save_at = checkpoint, now
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            if checkpoint != last_saved:
                with contextlib.suppress(Exception):
                    await self.save_checkpoint(checkpoint)
