"""Wiring of the mixer: etcd, NATS, state store, heartbeat, reconcile runtime, HTTP, micro.

Start order: clients -> heartbeat -> reconcile runtime (rebuild kills orphans first, then every
room is reconciled) -> NATS micro -> HTTP. Stop is the reverse: no reconcile runs any more when
the FFmpegs are stopped, and the heartbeat is revoked after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import Gauge

from common.keys import StateKey
from common.micro import serve_micro
from common.reconcile import ReconcileRuntime, Target
from common.scheduler import SchedulerClosed
from common.state import StateStore
from common.wiring import ModuleHeartbeat, etcd_reachable, keyspace_from, open_bus, open_etcd, serve_http
from svc_mixer.api import create_app
from svc_mixer.config import Config
from svc_mixer.reconcile import INTERESTS, RoomReconciler
from svc_mixer.service import Mixer, MixerSettings

__all__ = ["main", "mixer_settings", "running"]

logger = logging.getLogger(__name__)

VERSION = "0.1.0"
FFMPEG_CPU = Gauge("mixer_ffmpeg_cpu_seconds", "CPU seconds used so far by the FFmpegs running now")


def mixer_settings(config: Config) -> MixerSettings:
    return MixerSettings(
        hls_dir=Path(config.hls_dir).absolute(),
        state_dir=Path(config.state_dir).absolute(),
        host=config.host,
        key_base_url=config.key_base_url,
        hls_key_secret=config.hls_key_secret,
        rtp_port_start=config.rtp_port_start,
        rtp_port_end=config.rtp_port_end,
        hls_time_s=config.hls_time_s,
        hls_list_size=config.hls_list_size,
        audio_bitrate=config.audio_bitrate,
        audio_channels=config.audio_channels,
        audio_sample_rate=config.audio_sample_rate,
        ffmpeg_bin=config.ffmpeg_bin,
        stop_timeout_s=config.ffmpeg_stop_timeout_s,
    )


async def main(config: Config, stop: asyncio.Event) -> None:
    async with running(config) as mixer:
        logger.info("svc_mixer %s ready: %d room(s) running", config.mixer_id, mixer.running_count())
        await stop.wait()


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Mixer]:
    """The whole service until the block exits (tests run it in their own loop)."""
    started = time.monotonic()
    runtime: ReconcileRuntime | None = None

    def enqueue(target: Target, delay_s: float = 0.0) -> None:
        # a timer or an FFmpeg exit may fire while the runtime is stopping: nothing to do then
        if runtime is not None:
            with contextlib.suppress(SchedulerClosed):
                runtime.enqueue(target, delay_s)

    def restart_later(room_id: str, delay_s: float) -> None:
        enqueue(Target("rooms", room_id), delay_s)

    async with contextlib.AsyncExitStack() as stack:
        etcd = await stack.enter_async_context(open_etcd(config.etcd))
        bus = await stack.enter_async_context(open_bus(config.nats, name=f"svc_mixer-{config.mixer_id}"))
        keyspace = keyspace_from(config.etcd)
        store = StateStore(etcd, bus, keyspace)
        mixer = Mixer(mixer_settings(config), on_exit=restart_later)
        heartbeat = ModuleHeartbeat(
            store,
            collection="mixers",
            module_id=config.mixer_id,
            host=config.host,
            capacity=config.mixer_capacity,
            streams=mixer.streams,
            ttl_s=config.lease_ttl_s,
        )
        await stack.enter_async_context(heartbeat)
        stack.push_async_callback(mixer.aclose)
        reconciler = RoomReconciler(
            mixer,
            store,
            mixer_id=config.mixer_id,
            host=config.host,
            hls_delete_grace_s=config.hls_delete_grace_s,
            changed=heartbeat.streams_changed,
        )
        runtime = ReconcileRuntime(
            service="svc_mixer",
            instance=config.mixer_id,
            etcd=etcd,
            bus=bus,
            keyspace=keyspace,
            interests=list(INTERESTS),
            reconcile=reconciler.reconcile,
            rebuild=reconciler.rebuild,
        )
        reconciler.enqueue = enqueue
        await stack.enter_async_context(runtime)
        # after the rebuild: the watchdog's restarts go through the runtime's scheduler
        mixer.start_watchdog()
        for room_id in reconciler.leftover_dirs:
            runtime.enqueue(Target("rooms", room_id))

        heartbeat_key = store.key(StateKey("mixers", config.mixer_id, "heartbeat"))
        reconcile_runtime = runtime

        async def health() -> Mapping[str, bool]:
            return {
                "nats": bus.is_connected,
                "etcd": await etcd_reachable(etcd, heartbeat_key),
                "heartbeat": heartbeat.is_alive,
                "reconciler": reconcile_runtime.is_running,
                "watchdog": mixer.watchdog_running,
                "ffmpeg": mixer.ffmpeg_count(reconciler.assigned()).ok,
            }

        def status() -> Mapping[str, Any]:
            ffmpeg = mixer.ffmpeg_count(reconciler.assigned())
            return {
                "service": "svc_mixer",
                "mixer_id": config.mixer_id,
                "rooms": mixer.room_ids(),
                "rooms_running": mixer.running_count(),
                "rooms_assigned": ffmpeg.expected,
                "rooms_backoff": ffmpeg.backoff,
                "rooms_missing": ffmpeg.missing,
                "ffmpeg_restarts": mixer.restarts,
                "ffmpeg_stall_restarts": mixer.stall_restarts,
                "uptime_s": round(time.monotonic() - started, 1),
            }

        def before_metrics() -> None:
            FFMPEG_CPU.set(mixer.cpu_seconds())

        await stack.enter_async_context(
            serve_micro(
                bus,
                name="svc_mixer",
                version=VERSION,
                description="one FFmpeg per room: forwarded Opus RTP -> AES-128 HLS",
                status=status,
                metadata={"mixer_id": config.mixer_id},
            )
        )
        await stack.enter_async_context(
            serve_http(create_app(health, status, before_metrics), config.http.addr, name="svc_mixer")
        )
        yield mixer
