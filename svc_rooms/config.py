"""svc_rooms settings: every env name and default of the room manager (the reference system's names).

Keys kept from the reference: ``HTTP_ADDR`` (127.0.0.1:3000), ``HLS_ADV_URL`` and the common
blocks (``APP_*``, ``ETCD_*``). New here: ``API_TOKEN`` (guards every write and the module
list), ``NATS_*`` (events: docs/architecture.md, Events), ``HOUSEKEEPING_INTERVAL`` (a constant
of 30 s in the reference), ``ROOM_MAX_AGE`` (3 h, a constant there; ``0`` = unlimited),
``ROOM_REMOVING_GRACE`` (60 s, a constant there), ``ROOM_START_TIMEOUT`` (10 min, a constant
there), ``REDIS_*`` and ``REDIS_USER_SVC_PREFIX`` (svc_users' keys: the stats count the
connected users), ``ETCD_PREFIX_SLOTS`` (``/slots/``: the per-module assignment slots, outside the state
keyspace, see docs/svc_rooms.md), ``ETCD_PREFIX_OUTBOX`` (``/outbox/``: migrated events committed
with their migration, waiting for JetStream's ack) and ``MODULE_GRACE_PERIOD`` (15 s: how long a
module whose heartbeat vanished keeps its rooms, so a restart adopts them).

Renamed: ``ETCD_PREFIX_ROOM_STORE`` / ``ETCD_PREFIX_JANUS_STORE`` / ``ETCD_PREFIX_MIXER_STORE`` are
``ETCD_PREFIX_ROOMS`` / ``ETCD_PREFIX_JANUSES`` / ``ETCD_PREFIX_MIXERS``, the same names in every
service. Dropped as dead here: ``ETCD_DIAL_KEEPALIVE_*``, ``ETCD_AUTO_SYNC_INTERVAL``,
``ETCD_MAX_CALL_*``, ``ETCD_TLS_*`` (not wired to aetcd in this project), ``HTTP_TLS_*`` (TLS ends
at nginx) and ``OTEL_*`` (no OpenTelemetry; metrics are Prometheus).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs

from common.config import (
    AppSettings,
    EtcdSettings,
    HttpSettings,
    NatsSettings,
    RedisSettings,
    duration,
    key_prefix,
    load_settings,
    setting,
    url,
)

__all__ = ["Config"]


@attrs.frozen(kw_only=True)
class Config:
    app: AppSettings = attrs.field(factory=AppSettings)
    etcd: EtcdSettings = attrs.field(factory=EtcdSettings)
    nats: NatsSettings = attrs.field(factory=NatsSettings)
    redis: RedisSettings = attrs.field(factory=RedisSettings)
    http: HttpSettings = attrs.field(factory=lambda: HttpSettings(addr="127.0.0.1:3000"))
    redis_user_svc_prefix: str = setting(
        "rtcus", help="prefix of svc_users' Redis keys (the live anchor counts of the stats read them)"
    )
    hls_adv_url: str = setting(
        "http://127.0.0.1:8080/hls/", parse=url("http", "https"), help="public base URL of HLS playlists"
    )
    api_token: str = setting(
        "dev-api-token",
        secret=True,
        help="bearer token of every write (create/stop rooms, marks) and of the module list",
    )
    housekeeping_interval_s: float = setting(
        30.0, key="housekeeping_interval", parse=duration, help="period of removal/migration/resync pass"
    )
    room_max_age_s: float = setting(
        3 * 3600.0,
        key="room_max_age",
        parse=duration,
        help="an onair room older than this is stopped (0 = never)",
    )
    room_removing_grace_s: float = setting(
        60.0,
        key="room_removing_grace",
        parse=duration,
        help="a removing room whose modules have not let go is force-deleted after this",
    )
    room_start_timeout_s: float = setting(
        600.0,
        key="room_start_timeout",
        parse=duration,
        help="a room with meta but no livemeta is deleted after this",
    )
    slots_prefix: str = setting(
        "/slots/", key="etcd_prefix_slots", parse=key_prefix, help="etcd prefix of module assignment slots"
    )
    outbox_prefix: str = setting(
        "/outbox/",
        key="etcd_prefix_outbox",
        parse=key_prefix,
        help="etcd prefix of domain events committed but not yet acknowledged by JetStream",
    )
    module_grace_period_s: float = setting(
        15.0,
        key="module_grace_period",
        parse=duration,
        help="a module whose heartbeat is gone keeps its rooms this long (a restart adopts them)",
    )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, config_file: str | Path | None = None
    ) -> Config:
        return load_settings(cls, env=env, config_file=config_file)
