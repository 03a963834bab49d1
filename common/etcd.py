"""The etcd adapter: the only module that imports aetcd (docs/decisions.md: etcd3-py is unusable).

``EtcdStore`` offers a few async methods (get, prefix reads with their revision, put, delete,
compare-and-swap transactions, watches from a revision, leases) and returns our own frozen
records, so the client library stays swappable. Every call runs under a timeout and foreign
errors are translated where they enter:

    gRPC UNAVAILABLE, connection failures   -> Unavailable
    DEADLINE_EXCEEDED, our own timeouts     -> DependencyTimeout
    watch start revision compacted away     -> Compacted (an Unavailable: re-snapshot)
    lease not found                         -> LeaseLost (a NotFound)
    transaction compare failed              -> Conflict

Surviving an etcd restart: gRPC reconnects a channel by itself, but after failed attempts it
waits out a reconnect backoff in TRANSIENT_FAILURE, failing every call fast meanwhile. So a call
that finds the channel in TRANSIENT_FAILURE swaps in a fresh channel (at most one swap per
``_CHANNEL_SWAP_MIN_INTERVAL_S``) and closes the old one later, once nothing can be using it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, Literal, Self, TypeVar

import aetcd
import attrs
import grpc
from aetcd import rpc

from common.backoff import Backoff
from common.errors import AppError, Conflict, DependencyTimeout, InvalidInput, NotFound, Unavailable

__all__ = [
    "KV",
    "Compacted",
    "Compare",
    "DeleteOp",
    "EtcdStore",
    "LeaseLost",
    "PutOp",
    "WatchEvent",
]

logger = logging.getLogger(__name__)

DEFAULT_DIAL_TIMEOUT_S = 5.0
DEFAULT_REQUEST_TIMEOUT_S = 5.0
# Cap of watch_with_resume's backoff while etcd is away (see there).
WATCH_RETRY_MAX_S = 2.0
_CHANNEL_SWAP_MIN_INTERVAL_S = 0.2
_CHANNEL_OPTIONS: dict[str, Any] = {
    # Short reconnect backoff: etcd restarts take about a second; the default grows to 120 s.
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    # Detect a silently dead connection under a watch; etcd rejects pings more often than 5 s.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
}

T = TypeVar("T")


class Compacted(Unavailable):
    """etcd has compacted its history past the revision a watch wanted to start from."""

    def __init__(self, detail: str, *, compact_revision: int, **fields: Any) -> None:
        super().__init__(detail, compact_revision=compact_revision, **fields)
        self.compact_revision = compact_revision


class LeaseLost(NotFound):
    """The lease is gone (expired or revoked); keys written with it are gone too."""

    def __init__(self, detail: str, *, lease_id: int, **fields: Any) -> None:
        super().__init__(detail, lease=f"{lease_id:x}", **fields)
        self.lease_id = lease_id


@attrs.frozen(kw_only=True)
class KV:
    """One key as etcd has it; ``lease`` is 0 when the key has none."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@attrs.frozen(kw_only=True)
class Snapshot:
    """A prefix read: the keys and the store revision it saw (watch from ``revision + 1``)."""

    kvs: list[KV]
    revision: int


@attrs.frozen(kw_only=True)
class WatchEvent:
    """One change: ``mod_revision`` is the revision of the change itself (also for deletes)."""

    key: str
    op: Literal["put", "delete"]
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int


@attrs.frozen(kw_only=True)
class Compare:
    """One transaction condition: the key's ``target`` revision equals ``value`` (use the class methods)."""

    key: str
    target: Literal["mod_revision", "create_revision"]
    value: int

    @classmethod
    def mod_revision_is(cls, key: str, mod_revision: int) -> Compare:
        return cls(key=key, target="mod_revision", value=mod_revision)

    @classmethod
    def absent(cls, key: str) -> Compare:
        # An absent key has create_revision 0: the etcd idiom for create-if-absent.
        return cls(key=key, target="create_revision", value=0)


@attrs.frozen(kw_only=True)
class PutOp:
    key: str
    value: bytes
    lease: int | None = None


@attrs.frozen(kw_only=True)
class DeleteOp:
    """Delete one key, or every key under it when ``prefix`` is true."""

    key: str
    prefix: bool = False


def _b(key: str) -> bytes:
    return key.encode("utf-8")


def _range_end(prefix: bytes) -> bytes:
    """The exclusive end of the key range under ``prefix`` (b"\\0" = to the end for b"")."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def _prefix_range(prefix: str) -> tuple[bytes, bytes]:
    """(key, range_end) of every key under ``prefix``; "" is the whole keyspace."""
    key = _b(prefix)
    return key or b"\0", _range_end(key)


def _kv(kv: Any) -> KV:
    return KV(
        key=bytes(kv.key).decode("utf-8"),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        version=int(kv.version),
        lease=int(kv.lease),
    )


def _compare_msg(c: Compare) -> Any:
    msg = rpc.Compare(key=_b(c.key), result=rpc.Compare.EQUAL)
    if c.target == "mod_revision":
        msg.target = rpc.Compare.MOD
        msg.mod_revision = c.value
    else:
        msg.target = rpc.Compare.CREATE
        msg.create_revision = c.value
    return msg


def _op_msg(op: PutOp | DeleteOp) -> Any:
    if isinstance(op, PutOp):
        return rpc.RequestOp(request_put=rpc.PutRequest(key=_b(op.key), value=op.value, lease=op.lease or 0))
    key = _b(op.key)
    if op.prefix:
        if not key:
            raise InvalidInput("refusing to delete the whole keyspace (empty prefix)")
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=_range_end(key)))
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def _rpc_error(exc: BaseException) -> Any:
    """The gRPC error behind ``exc`` (aetcd wraps them with ``raise ... from``), or None."""
    if isinstance(exc, rpc.AioRpcError):
        return exc
    if isinstance(exc.__cause__, rpc.AioRpcError):
        return exc.__cause__
    return None


def _translate(exc: BaseException, op: str, key: str, *, lease_id: int | None = None) -> AppError:
    """Our error class for a foreign etcd/gRPC/timeout error (the caller raises it ``from exc``)."""
    fields: dict[str, Any] = {"op": op, "key": key}
    if isinstance(exc, aetcd.RevisionCompactedError):
        rev = int(exc.compacted_revision)
        return Compacted(
            f"etcd {op}: history compacted past the start revision", compact_revision=rev, **fields
        )
    err = _rpc_error(exc)
    code = err.code() if err is not None else None
    details = (err.details() or "") if err is not None else str(exc)
    if code is not None:
        fields["code"] = code.name
    if (
        isinstance(exc, (TimeoutError, aetcd.ConnectionTimeoutError, aetcd.WatchTimeoutError))
        or code == rpc.StatusCode.DEADLINE_EXCEEDED
    ):
        return DependencyTimeout(f"etcd {op} timed out", **fields)
    if code == rpc.StatusCode.NOT_FOUND and "lease" in details and lease_id is not None:
        return LeaseLost(f"etcd {op}: lease not found", lease_id=lease_id, **fields)
    if code == rpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInput(f"etcd {op} rejected: {details}", **fields)
    return Unavailable(f"etcd {op} failed: {details or type(exc).__name__}", **fields)


def _parse_endpoint(endpoint: str) -> tuple[str, int]:
    ep = endpoint.strip()
    for scheme in ("http://", "https://"):
        if ep.startswith(scheme):
            ep = ep[len(scheme) :]
    host, sep, port = ep.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidInput("etcd endpoint must be host:port", endpoint=endpoint)
    return host.strip("[]"), int(port)


def _client_target(endpoints: Sequence[str]) -> tuple[str, int]:
    """(host, port) for aetcd, which builds the gRPC target as f"{host}:{port}".

    Several endpoints become one ``ipv4:a:p,b:p`` target (gRPC's address-list scheme), so the
    channel fails over by itself; that scheme takes IP literals only.
    """
    if not endpoints:
        raise InvalidInput("no etcd endpoints configured")
    parsed = [_parse_endpoint(e) for e in endpoints]
    if len(parsed) == 1:
        return parsed[0]
    try:
        for host, _ in parsed:
            ipaddress.IPv4Address(host)
    except ValueError as exc:
        raise InvalidInput("several etcd endpoints must be IPv4 literals", endpoints=list(endpoints)) from exc
    target = "ipv4:" + ",".join(f"{h}:{p}" for h, p in parsed)
    host, _, port = target.rpartition(":")
    return host, int(port)


class EtcdStore:
    """An etcd client: a few async methods, each under ``request_timeout_s``.

    Use ``async with EtcdStore.open([...]) as store`` or ``connect()`` / ``aclose()``.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        username: str = "",
        password: str = "",
        dial_timeout_s: float = DEFAULT_DIAL_TIMEOUT_S,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        self._host, self._port = _client_target(endpoints)
        self._endpoints = list(endpoints)
        self._username = username
        self._password = password
        self.dial_timeout_s = dial_timeout_s
        self.request_timeout_s = request_timeout_s
        self._client: Any = None
        self._last_swap = 0.0
        self._retired: set[asyncio.Task[None]] = set()
        self._is_closed = False

    @classmethod
    def open(cls, endpoints: Sequence[str], **kwargs: Any) -> EtcdStore:
        """A store to use as ``async with``: connects on enter, closes on exit."""
        return cls(endpoints, **kwargs)

    @property
    def is_closed(self) -> bool:
        return self._is_closed

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- connection -------------------------------------------------------------------------

    async def _new_client(self) -> Any:
        client = aetcd.Client(
            host=self._host,
            port=self._port,
            username=self._username or None,
            password=self._password or None,
            timeout=self.request_timeout_s,
            options=_CHANNEL_OPTIONS,
        )
        try:
            async with asyncio.timeout(self.dial_timeout_s):
                await client.connect()
        except (aetcd.ClientError, rpc.AioRpcError, TimeoutError) as exc:
            await client.close()
            raise _translate(exc, "connect", "") from exc
        return client

    async def connect(self) -> None:
        """Open the channel and wait (``dial_timeout_s``) until etcd answers; Unavailable if not."""
        if self._is_closed:
            raise RuntimeError("EtcdStore is closed")
        if self._client is not None:
            return
        client = await self._new_client()
        try:
            # A real RPC that waits for the connection under a gRPC deadline: cancelling
            # channel_ready() instead leaves a connectivity watch behind in gRPC core.
            async with asyncio.timeout(self.dial_timeout_s + 1.0):
                await client.maintenancestub.Status(
                    rpc.StatusRequest(),
                    timeout=self.dial_timeout_s,
                    wait_for_ready=True,
                    metadata=client.metadata,
                )
        except (rpc.AioRpcError, TimeoutError) as exc:
            await client.close()
            raise Unavailable(
                f"etcd not reachable within {self.dial_timeout_s:.1f} s", endpoints=self._endpoints
            ) from exc
        self._client = client
        logger.info("etcd connected to %s", ",".join(self._endpoints))

    async def aclose(self) -> None:
        """Close the channel (and any retired ones); idempotent."""
        if self._is_closed:
            return
        self._is_closed = True
        for task in list(self._retired):
            task.cancel()
        for task in list(self._retired):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _current(self) -> Any:
        """The client to use now, swapping the channel if gRPC is sitting out a reconnect backoff."""
        if self._is_closed:
            raise RuntimeError("EtcdStore is closed")
        if self._client is None:
            await self.connect()
        client = self._client
        state = client.channel.get_state(try_to_connect=False)
        now = time.monotonic()
        if (
            state == grpc.ChannelConnectivity.TRANSIENT_FAILURE
            and now - self._last_swap >= _CHANNEL_SWAP_MIN_INTERVAL_S
        ):
            self._last_swap = now
            fresh = await self._new_client()
            if self._client is client and not self._is_closed:
                self._client = fresh
                self._retire(client)
                logger.debug("etcd channel TRANSIENT_FAILURE -> fresh channel")
            else:  # another task swapped first
                await fresh.close()
            client = self._client
        return client

    def _retire(self, client: Any) -> None:
        # Closing a channel cancels its in-flight calls, which surfaces as CancelledError in
        # tasks nobody cancelled; so close it only after every unary call on it has timed out.
        async def close_later() -> None:
            try:
                await asyncio.sleep(self.request_timeout_s + 1.0)
            finally:
                await client.close()

        task = asyncio.create_task(close_later(), name="etcd-retire-channel")
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def _call(
        self, op: str, key: str, fn: Callable[[Any], Awaitable[T]], *, lease_id: int | None = None
    ) -> T:
        client = await self._current()
        try:
            async with asyncio.timeout(self.request_timeout_s):
                return await fn(client)
        except AppError:
            raise
        except (aetcd.ClientError, rpc.AioRpcError, TimeoutError) as exc:
            raise _translate(exc, op, key, lease_id=lease_id) from exc

    # -- key/value --------------------------------------------------------------------------

    async def get(self, key: str) -> KV | None:
        got = await self._call("get", key, lambda c: c.get(_b(key)))
        return None if got is None else _kv(got)

    async def get_prefix(self, prefix: str) -> Snapshot:
        """Every key under ``prefix`` (key order) and the revision of the read."""
        start, end = _prefix_range(prefix)
        got = await self._call("get_prefix", prefix, lambda c: c.get_range(start, end))
        return Snapshot(kvs=[_kv(kv) for kv in got.kvs], revision=int(got.header.revision))

    async def revision(self, prefix: str) -> int:
        """etcd's current revision, read as a count-only range (no values travel)."""
        start, end = _prefix_range(prefix)
        request = rpc.RangeRequest(key=start, range_end=end, count_only=True)

        async def run(c: Any) -> Any:
            return await c.kvstub.Range(request, timeout=self.request_timeout_s, metadata=c.metadata)

        got = await self._call("revision", prefix, run)
        return int(got.header.revision)

    async def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        """Write ``key``; returns the new revision. LeaseLost if ``lease`` is gone."""
        got = await self._call("put", key, lambda c: c.put(_b(key), value, lease=lease), lease_id=lease)
        return int(got.header.revision)

    async def delete(self, key: str) -> int | None:
        """Delete ``key``; the revision of the delete, or None if there was nothing to delete."""
        got = await self._call("delete", key, lambda c: c.delete(_b(key)))
        return None if got is None else int(got.header.revision)

    # -- transactions -----------------------------------------------------------------------

    async def txn(self, compares: Sequence[Compare], ops: Sequence[PutOp | DeleteOp]) -> tuple[bool, int]:
        """One etcd transaction: ``ops`` if every compare holds, else nothing; (succeeded, revision)."""
        compare = [_compare_msg(c) for c in compares]
        request = rpc.TxnRequest(compare=compare, success=[_op_msg(o) for o in ops])
        key = compares[0].key if compares else (ops[0].key if ops else "")
        leases = [o.lease for o in ops if isinstance(o, PutOp) and o.lease]

        async def run(c: Any) -> Any:
            return await c.kvstub.Txn(request, timeout=self.request_timeout_s, metadata=c.metadata)

        got = await self._call("txn", key, run, lease_id=leases[0] if leases else None)
        return bool(got.succeeded), int(got.header.revision)

    async def create(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        """Write ``key`` only if it does not exist; Conflict if it does. Returns the revision."""
        ok, rev = await self.txn([Compare.absent(key)], [PutOp(key=key, value=value, lease=lease)])
        if not ok:
            raise Conflict("key already exists", key=key)
        return rev

    async def replace(self, key: str, value: bytes, *, mod_revision: int, lease: int | None = None) -> int:
        """Overwrite ``key`` only if it is still at ``mod_revision``; Conflict if not."""
        ok, rev = await self.txn(
            [Compare.mod_revision_is(key, mod_revision)], [PutOp(key=key, value=value, lease=lease)]
        )
        if not ok:
            raise Conflict("key changed since it was read", key=key, mod_revision=mod_revision)
        return rev

    async def delete_if(self, key: str, *, mod_revision: int) -> int:
        """Delete ``key`` only if it is still at ``mod_revision``; Conflict if not (or absent)."""
        ok, rev = await self.txn([Compare.mod_revision_is(key, mod_revision)], [DeleteOp(key=key)])
        if not ok:
            raise Conflict("key changed since it was read", key=key, mod_revision=mod_revision)
        return rev

    # -- watches ----------------------------------------------------------------------------

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncGenerator[WatchEvent, None]:
        """Every change under ``prefix`` from ``start_revision`` (inclusive), in revision order.

        Runs until cancelled or until the stream fails: Compacted if ``start_revision`` is gone,
        Unavailable if the connection drops. One gRPC stream per watch, closed when the
        iteration ends; consume it in a task you cancel, or under ``contextlib.aclosing``.
        """
        client = await self._current()
        start, end = _prefix_range(prefix)
        create = rpc.WatchCreateRequest(key=start, range_end=end, start_revision=start_revision)
        call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
        try:
            async with asyncio.timeout(self.request_timeout_s):
                await call.write(rpc.WatchRequest(create_request=create))
                # The first response confirms the watch (or reports compaction).
                first = await call.read()
            resp = first
            while True:
                if resp is grpc.aio.EOF:
                    raise Unavailable("etcd watch stream ended", op="watch", key=prefix)
                if resp.compact_revision:
                    raise Compacted(
                        "etcd watch: history compacted past the start revision",
                        compact_revision=int(resp.compact_revision),
                        op="watch",
                        key=prefix,
                        start_revision=start_revision,
                    )
                if resp.canceled:
                    raise Unavailable(f"etcd watch canceled: {resp.cancel_reason}", op="watch", key=prefix)
                for ev in resp.events:
                    is_put = ev.type == rpc.Event.PUT
                    yield WatchEvent(
                        key=bytes(ev.kv.key).decode("utf-8"),
                        op="put" if is_put else "delete",
                        value=bytes(ev.kv.value) if is_put else b"",
                        mod_revision=int(ev.kv.mod_revision),
                        create_revision=int(ev.kv.create_revision),
                        lease=int(ev.kv.lease),
                    )
                resp = await call.read()
        except AppError:
            raise
        except (rpc.AioRpcError, TimeoutError) as exc:
            raise _translate(exc, "watch", prefix) from exc
        finally:
            call.cancel()

    async def watch_with_resume(
        self, prefix: str, *, start_revision: int
    ) -> AsyncGenerator[WatchEvent, None]:
        """Like ``watch``, but re-watches from the last seen revision + 1 when the stream drops.

        Retries with backoff (``common/backoff.py``, capped at ``WATCH_RETRY_MAX_S``) for as long
        as etcd is away; raises Compacted when the resume point is gone (the caller re-snapshots).
        """
        next_revision = start_revision
        # Cap 2 s, not 10: the relay publishes nothing while its watch is down, and an etcd restart
        # takes about a second (cf. _CHANNEL_OPTIONS). Jitter: every watcher of an etcd drops at once.
        backoff = Backoff(max_s=WATCH_RETRY_MAX_S, jitter=0.5)
        while True:
            try:
                async for event in self.watch(prefix, start_revision=next_revision):
                    next_revision = event.mod_revision + 1
                    backoff.reset()
                    yield event
            except Compacted:
                raise
            except Unavailable as exc:
                logger.info(
                    "etcd watch %s dropped (%s) -> resuming at revision %d", prefix, exc, next_revision
                )
            await asyncio.sleep(backoff.next())

    # -- leases -----------------------------------------------------------------------------

    async def grant(self, ttl_s: float) -> int:
        """A new lease of ``ttl_s`` (rounded up to whole seconds; etcd may raise it to ~2 s)."""
        if ttl_s <= 0:
            raise InvalidInput("lease TTL must be positive", ttl_s=ttl_s)
        ttl = max(1, math.ceil(ttl_s))
        lease = await self._call("grant", "", lambda c: c.lease(ttl))
        return int(lease.id)

    async def refresh(self, lease_id: int) -> int:
        """Keep the lease alive once; returns its TTL in seconds. LeaseLost if it is gone."""

        async def keepalive(c: Any) -> Any:
            # aetcd's refresh_lease leaves its stream for the GC; ours is closed explicitly.
            call = c.leasestub.LeaseKeepAlive(timeout=self.request_timeout_s, metadata=c.metadata)
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                return await call.read()
            finally:
                call.cancel()

        resp = await self._call("refresh", "", keepalive, lease_id=lease_id)
        if resp is grpc.aio.EOF:
            raise Unavailable("etcd lease keep-alive stream ended", op="refresh", lease=f"{lease_id:x}")
        ttl = int(resp.TTL)
        if ttl <= 0:
            raise LeaseLost("lease expired or revoked", lease_id=lease_id, op="refresh")
        return ttl

    async def revoke(self, lease_id: int) -> None:
        """Revoke the lease, deleting its keys at once; a lease already gone is fine."""
        with contextlib.suppress(LeaseLost):
            await self._call("revoke", "", lambda c: c.revoke_lease(lease_id), lease_id=lease_id)

    async def compact(self, revision: int) -> None:
        """Drop history before ``revision`` (tests, maintenance)."""
        await self._call("compact", "", lambda c: c.compact(revision, physical=True))
