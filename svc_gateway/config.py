"""svc_gateway settings: every env name and default of the WebSocket gateway (the reference system's names).

Kept from the reference: ``WS_HTTP_ADDR`` (127.0.0.1:8081), ``REDIS_USER_SVC_PREFIX`` (rtcus,
prefix of the per-user connection lock), ``JWT_SECRET``, ``JANUS_TOKEN_KEY`` (exactly 32 bytes),
``ALLOWED_ORIGINS`` (``*``), ``ETCD_PREFIX_ROOMS`` / ``ETCD_PREFIX_JANUSES`` (the reference's
``ETCD_PREFIX_ROOM_STORE`` / ``ETCD_PREFIX_JANUS_STORE``) and the common blocks (``REDIS_*``).
Both secrets are refused at their defaults unless ``APP_ENV=development``. New: ``NATS_*``,
``JANUS_WS_PORT`` (8188), ``CONN_LOCK_TTL`` (30 s, what the reference meant: its lock TTL was a
µs/ms bug), ``WS_PING_INTERVAL`` (10 s, a reference constant), ``SERVER_HEARTBEAT_TTL`` (3 s, a
reference constant: the gateway process's Redis heartbeat), ``JANUS_REQUEST_TIMEOUT`` (10 s),
``USERS_REQUEST_TIMEOUT`` (2 s, a status report to svc_users) and the per-connection rate limit
``WS_RATE_PER_S`` / ``WS_RATE_BURST`` (the reference had none).

Dropped: ``JANUS_PORT`` (8088, the Janus HTTP transport; this project uses the WebSocket API,
``JANUS_WS_PORT``), ``JWT_EXPIRES_IN`` (unused in the reference; tokens are issued by svc_users),
``JANUS_INST_CACHE_SIZE`` (Janus instances come from the etcd cache, no LRU), the three
``REDIS_*_STREAM`` names (user status and kick/notify go over NATS here, docs/architecture.md, Events), the
etcd keepalive/TLS/size keys, ``*_TLS_*`` and ``OTEL_*``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import attrs

from common.config import (
    AppSettings,
    EtcdSettings,
    HttpSettings,
    NatsSettings,
    RedisSettings,
    at_least,
    duration,
    integer,
    load_settings,
    port,
    setting,
)

__all__ = ["Config"]

JANUS_TOKEN_KEY_BYTES = 32


def _token_key(raw: object) -> str:
    if not isinstance(raw, str) or len(raw.encode()) != JANUS_TOKEN_KEY_BYTES:
        raise ValueError(f"expected exactly {JANUS_TOKEN_KEY_BYTES} bytes")
    return raw


def _rate(raw: object, _: object = None) -> float:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError("expected a number")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


@attrs.frozen(kw_only=True)
class Config:
    app: AppSettings = attrs.field(factory=AppSettings)
    etcd: EtcdSettings = attrs.field(factory=EtcdSettings)
    nats: NatsSettings = attrs.field(factory=NatsSettings)
    redis: RedisSettings = attrs.field(factory=RedisSettings)
    ws_http: HttpSettings = attrs.field(factory=lambda: HttpSettings(addr="127.0.0.1:8081"))
    redis_user_svc_prefix: str = setting("rtcus", help="prefix of Redis keys (connection lock)")
    jwt_secret: str = setting(
        "MY-secret-key-change-in-production", secret=True, help="HS256 key of user JWTs (same as svc_users)"
    )
    janus_token_key: str = setting(
        "my-janus-token-key-32bytes!!!!!!", secret=True, parse=_token_key, help="32-byte Janus token key"
    )
    janus_ws_port: int = setting(8188, parse=port, help="Janus WebSocket API port on a Janus host")
    allowed_origins: list[str] = setting(["*"], help="allowed WebSocket Origin values; * = any")
    conn_lock_ttl_s: float = setting(
        30.0, key="conn_lock_ttl", parse=duration, help="TTL of the per-user connection lock"
    )
    ws_ping_interval_s: float = setting(
        10.0, key="ws_ping_interval", parse=duration, help="WebSocket ping period"
    )
    server_heartbeat_ttl_s: float = setting(
        3.0,
        key="server_heartbeat_ttl",
        parse=at_least(duration, 1),
        help="TTL of this process's Redis heartbeat (refreshed every second)",
    )
    janus_request_timeout_s: float = setting(
        10.0, key="janus_request_timeout", parse=at_least(duration, 0.1), help="one Janus request"
    )
    janus_keepalive_interval_s: float = setting(
        20.0,
        key="janus_keepalive_interval",
        parse=at_least(duration, 0),
        help="a client keepalive reaches Janus when its session was quiet this long (< session_timeout)",
    )
    users_request_timeout_s: float = setting(
        2.0, key="users_request_timeout", parse=at_least(duration, 0.1), help="a status report to svc_users"
    )
    ws_rate_per_s: float = setting(
        20.0, parse=at_least(_rate, 0.1), help="JSON-RPC messages per second one connection may send"
    )
    ws_rate_burst: int = setting(
        40, parse=at_least(integer, 1), help="messages one connection may send at once above the rate"
    )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, config_file: str | Path | None = None
    ) -> Config:
        """Defaults, then the config file (``APP_CONFIG_FILE``), then ``env`` (os.environ)."""
        return load_settings(cls, env=env, config_file=config_file)
