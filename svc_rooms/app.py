"""svc_rooms wiring: etcd, NATS, the state relay, the reconcile runtime, housekeeping, HTTP, micro.

``running(config)`` is the whole service as an async context manager (tests use it in-process
with a fake clock); ``main(config, stop)`` runs it until ``stop`` is set. Start order: clients,
the state relay (so lease expiries reach NATS), the reconcile runtime (consumer, snapshot,
enqueue all), the outbox scan (events a crashed run committed but did not publish),
housekeeping, then the HTTP server and the micro registration; the stack unwinds in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs

from common.bus import Bus
from common.keys import Kind
from common.members import live_count
from common.micro import serve_micro
from common.reconcile import ReconcileRuntime, Target
from common.relay import StateRelay
from common.state import StateStore
from common.supervisor import SupervisedTask
from common.userkeys import UserKeys
from common.wiring import (
    etcd_reachable,
    instance_name,
    keyspace_from,
    open_bus,
    open_etcd,
    open_redis,
    serve_http,
)
from svc_rooms.api import create_app
from svc_rooms.config import Config
from svc_rooms.housekeeping import Housekeeper
from svc_rooms.reconcile import INTERESTS, RoomReconciler
from svc_rooms.resources import ResourceManager
from svc_rooms.roomstore import RoomStore
from svc_rooms.service import Clock, RoomService, utc_now

__all__ = ["SERVICE", "Rooms", "main", "running"]

logger = logging.getLogger(__name__)

SERVICE = "svc_rooms"


def _version() -> str:
    try:
        return importlib.metadata.version("audio-rtc")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


@attrs.frozen(kw_only=True)
class Rooms:
    """Handles on a running svc_rooms (for tests and benchmarks)."""

    config: Config
    service: RoomService
    store: RoomStore
    runtime: ReconcileRuntime
    reconciler: RoomReconciler
    housekeeper: Housekeeper
    relay: StateRelay
    url: str


@contextlib.asynccontextmanager
async def running(
    config: Config, *, clock: Clock = utc_now, run_housekeeping: bool = True
) -> AsyncIterator[Rooms]:
    """The service, running until the block exits. ``run_housekeeping=False``: tests call
    ``housekeeper.run_once()`` themselves."""
    keyspace = keyspace_from(config.etcd)
    async with contextlib.AsyncExitStack() as stack:
        etcd = await stack.enter_async_context(open_etcd(config.etcd))
        bus: Bus = await stack.enter_async_context(open_bus(config.nats, name=SERVICE))
        relay = await stack.enter_async_context(StateRelay(etcd=etcd, bus=bus, keyspace=keyspace))
        # only the stats read Redis; a client connects on first use, so Redis down fails them alone
        redis = await stack.enter_async_context(open_redis(config.redis))
        user_keys = UserKeys(config.redis_user_svc_prefix)

        async def live_anchors(room_id: str) -> int:
            return await live_count(redis, user_keys, room_id, int(clock().timestamp() * 1000))

        store = RoomStore(
            etcd, bus, keyspace, slots_prefix=config.slots_prefix, outbox_prefix=config.outbox_prefix
        )
        states = StateStore(etcd, bus, keyspace)
        reconcilers: list[RoomReconciler] = []

        async def reconcile(target: Target, view: Mapping[str, Any]) -> None:
            await reconcilers[0].reconcile(target, view)

        runtime = ReconcileRuntime(
            service=SERVICE,
            instance=instance_name(),
            etcd=etcd,
            bus=bus,
            keyspace=keyspace,
            interests=list(INTERESTS),
            reconcile=reconcile,
            resync_interval_s=config.housekeeping_interval_s,
        )
        resources = ResourceManager(runtime.cache, store)
        service = RoomService(
            store, states, resources, hls_adv_url=config.hls_adv_url, clock=clock, live_anchors=live_anchors
        )
        reconcilers.append(
            RoomReconciler(
                store,
                resources,
                runtime.cache,
                runtime.enqueue,
                grace_s=config.module_grace_period_s,
                clock=clock,
            )
        )
        await stack.enter_async_context(runtime)
        # Events an earlier run committed but did not publish (it died in between) go out now.
        await reconcilers[0].scan_outbox()
        housekeeper = Housekeeper(
            store,
            service,
            runtime.enqueue,
            max_age_s=config.room_max_age_s,
            removing_grace_s=config.room_removing_grace_s,
            start_timeout_s=config.room_start_timeout_s,
            scan_outbox=reconcilers[0].scan_outbox,
            clock=clock,
        )
        housekeeping: SupervisedTask | None = None
        if run_housekeeping:
            # Supervised: without it finished rooms and orphan slots would pile up unnoticed.
            housekeeping = await stack.enter_async_context(
                SupervisedTask(
                    "svc_rooms-housekeeping",
                    lambda: housekeeper.run_forever(config.housekeeping_interval_s),
                )
            )

        probe_key = store.room_key("health-probe", Kind.META)

        async def health() -> dict[str, bool]:
            checks = {
                "etcd": await etcd_reachable(etcd, probe_key),
                "nats": bus.is_connected,
                "relay": relay.is_running,
                "reconciler": runtime.is_running,
            }
            if housekeeping is not None:
                checks["housekeeping"] = housekeeping.is_running
            return checks

        def status() -> dict[str, Any]:
            return {
                "cache_keys": len(runtime.cache),
                "relay_published": relay.stats.published,
                "relay_checkpoint": relay.stats.checkpoint,
                "events_applied": runtime.stats.events_applied,
                "modules": len(resources.modules()),
            }

        app = create_app(service, api_token=config.api_token, health=health)
        server = await stack.enter_async_context(serve_http(app, config.http.addr, name=SERVICE))
        await stack.enter_async_context(
            serve_micro(bus, name=SERVICE, version=_version(), description="room manager", status=status)
        )
        host, port = server.servers[0].sockets[0].getsockname()[:2] if server.servers else ("", 0)
        url = f"http://{host}:{port}" if port else f"http://{config.http.addr}"
        yield Rooms(
            config=config,
            service=service,
            store=store,
            runtime=runtime,
            reconciler=reconcilers[0],
            housekeeper=housekeeper,
            relay=relay,
            url=url,
        )


async def main(config: Config, stop: asyncio.Event) -> None:
    async with running(config) as rooms:
        logger.info("svc_rooms ready at %s", rooms.url)
        await stop.wait()
