"""Wiring of svc_janus: etcd, NATS, the Janus client, the reconcile runtime, heartbeat, HTTP.

Start order: clients, a Janus session (start-up fails if Janus does not answer within
``JANUS_REQUEST_TIMEOUT``), the reconcile runtime (snapshot, rebuild against Janus, reconcile
everything), the heartbeat (only a manager that has rebuilt offers capacity), the restart
monitor, HTTP and the NATS micro endpoint. Exit undoes it in reverse; the Janus rooms are left
running, so a restarted manager adopts them without interrupting anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs

from common.bus import Bus
from common.etcd import EtcdStore
from common.keys import StateKey
from common.micro import serve_micro
from common.reconcile import ReconcileRuntime, Target
from common.state import StateStore
from common.wiring import (
    ModuleHeartbeat,
    etcd_reachable,
    keyspace_from,
    open_bus,
    open_etcd,
    serve_http,
)
from svc_janus.api import create_app
from svc_janus.audiobridge import AudioBridge
from svc_janus.config import Config
from svc_janus.janus_ws import JanusClient, SessionInfo
from svc_janus.reconcile import INTERESTS, JanusMonitor, RoomReconciler
from svc_janus.service import RoomService

__all__ = ["JanusApp", "main", "running"]

logger = logging.getLogger(__name__)

SERVICE = "svc_janus"
VERSION = "0.1.0"


@attrs.define
class JanusApp:
    """The running pieces (tests and the status endpoints look at them)."""

    config: Config
    client: JanusClient
    service: RoomService
    reconciler: RoomReconciler
    runtime: ReconcileRuntime
    monitor: JanusMonitor
    heartbeat: ModuleHeartbeat

    etcd: EtcdStore
    bus: Bus
    heartbeat_key: str

    async def health(self) -> Mapping[str, bool]:
        """The named checks of ``/health``: all true, or the service cannot do its job."""
        return {
            "nats": self.bus.is_connected,
            "etcd": await etcd_reachable(self.etcd, self.heartbeat_key),
            "heartbeat": self.heartbeat.is_alive,
            # a session with its AudioBridge handle: without it no room can be created or checked
            "janus": self.client.session is not None,
            "reconciler": self.runtime.is_running,
            "monitor": self.monitor.is_running,
        }

    def status(self) -> Mapping[str, Any]:
        session = self.client.session
        return {
            "service": SERVICE,
            "janusId": self.config.janus_id,
            "janus": {
                "url": self.config.janus_ws_url,
                "connected": session is not None,
                "sessionId": session.session_id if session else None,
                "sessions": session.number if session else None,
            },
            "rooms": len(self.service.held),
            "forwarders": sum(1 for h in self.service.held.values() if h.forwarder is not None),
            "restartsDetected": self.reconciler.restarts_detected,
            "monitorRestarts": self.monitor.restarts,
        }


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[JanusApp]:
    """The whole service, started; exits in reverse order."""
    async with contextlib.AsyncExitStack() as stack:
        etcd = await stack.enter_async_context(open_etcd(config.etcd))
        bus: Bus = await stack.enter_async_context(open_bus(config.nats, name=f"{SERVICE}-{config.janus_id}"))
        keyspace = keyspace_from(config.etcd)
        store = StateStore(etcd, bus, keyspace)

        monitor_ref: list[JanusMonitor] = []

        def on_session(session: SessionInfo) -> None:
            # Any new session after the first may follow a Janus restart: check the rooms now.
            if session.number > 1 and monitor_ref:
                monitor_ref[0].wake()

        client = JanusClient(
            config.janus_ws_url,
            request_timeout_s=config.janus_request_timeout_s,
            keepalive_interval_s=config.keepalive_interval_s,
            on_session=on_session,
            name=f"janus-{config.janus_id}",
        )
        await stack.enter_async_context(client)
        await client.wait_connected(config.janus_request_timeout_s)
        service = RoomService(
            AudioBridge(client, admin_key=config.admin_secret),
            janus_id=config.janus_id,
            admin_secret=config.admin_secret,
            allow_rtp_participants=config.allow_rtp_participants,
        )
        heartbeat = ModuleHeartbeat(
            store,
            collection="januses",
            module_id=config.janus_id,
            host=config.janus_adv_host,
            capacity=config.janus_capacity,
            streams=lambda: len(service.held),
            ttl_s=config.lease_ttl_s,
        )

        async def on_change() -> None:
            if heartbeat.is_alive:
                await heartbeat.streams_changed()

        async def publish(subject: str, payload: bytes) -> None:
            await bus.publish(subject, payload)

        reconciler = RoomReconciler(service, store, publish, on_change=on_change)
        runtime = ReconcileRuntime(
            service=SERVICE,
            instance=config.janus_id,
            etcd=etcd,
            bus=bus,
            keyspace=keyspace,
            interests=list(INTERESTS),
            reconcile=reconciler.reconcile,
            rebuild=reconciler.rebuild,
        )

        def enqueue(target: Target) -> None:
            runtime.enqueue(target)

        reconciler.enqueue = enqueue
        await stack.enter_async_context(runtime)
        await stack.enter_async_context(heartbeat)
        monitor = JanusMonitor(
            reconciler, interval_s=config.monitor_interval_s, is_connected=lambda: client.is_connected
        )
        monitor_ref.append(monitor)
        await stack.enter_async_context(monitor)
        app = JanusApp(
            config=config,
            client=client,
            service=service,
            reconciler=reconciler,
            runtime=runtime,
            monitor=monitor,
            heartbeat=heartbeat,
            etcd=etcd,
            bus=bus,
            heartbeat_key=store.key(StateKey("januses", config.janus_id, "heartbeat")),
        )
        await stack.enter_async_context(
            serve_http(create_app(app.health, app.status), config.http.addr, name=SERVICE)
        )
        await stack.enter_async_context(
            serve_micro(
                bus,
                name=SERVICE,
                version=VERSION,
                description=f"Janus manager {config.janus_id}: AudioBridge rooms and RTP forwarders",
                status=app.status,
                metadata={"janus_id": config.janus_id},
            )
        )
        logger.info(
            "svc_janus %s ready: Janus %s, %d rooms held",
            config.janus_id,
            config.janus_ws_url,
            len(service.held),
        )
        yield app


async def main(config: Config, stop: asyncio.Event) -> None:
    async with running(config):
        await stop.wait()
