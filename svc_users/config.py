"""svc_users settings: every env name and default of the user service (the reference system's names).

svc_users also takes over the old ``hlsserver`` (viewer tokens and the HLS key endpoint).

Kept from the reference: ``HTTP_ADDR`` (127.0.0.1:8085), ``REDIS_USER_SVC_PREFIX`` (rtcus),
``JWT_SECRET`` (refused at its default unless APP_ENV=development), ``JWT_EXPIRES_IN`` (1h; unused in the
reference, used here for the tokens this service issues), ``ETCD_PREFIX_ROOMS`` (the reference's
``ETCD_ROOM_PREFIX``) and the common blocks, including ``APP_SHUTDOWN_TIMEOUT`` (missing in the
reference's users service). The reference constants became keys: ``USER_STATUS_TIMEOUT`` (30 s),
``ROOM_MAX_TTL`` (6 h), ``EXPIRY_CHECK_INTERVAL`` (10 s). New: ``HLS_KEY_SECRET``, the server
secret the rooms' AES-128 keys are derived from (docs/architecture.md, Services; the mixer needs the same),
``VIEWER_TOKEN_TTL`` (15m: lifetime of the HLS viewer tokens of ``POST /api/token``),
``VIEWER_TOKEN_SECRET`` (their signing key, distinct from ``JWT_SECRET`` so a viewer token can
never pass as a user token), ``API_TOKEN`` (svc_rooms' API token: app servers create users of
any role, kick and mute with it; refused at its default like there) and ``NATS_*``.

Dropped: ``PREFIX_ROOM_STORE`` (unused), the three ``REDIS_*_STREAM`` names and
``STREAM_TRIM_INTERVAL`` (user status and kick events go over NATS here), the hlsserver's
``ENABLE_*_SERVER`` switches and ``*_SERVER_HTTP_ADDR`` (one HTTP server), the etcd
keepalive/TLS/size keys, ``HTTP_TLS_*`` and ``OTEL_*``.
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
    at_least,
    duration,
    load_settings,
    setting,
)

__all__ = ["Config"]


@attrs.frozen(kw_only=True)
class Config:
    app: AppSettings = attrs.field(factory=AppSettings)
    etcd: EtcdSettings = attrs.field(factory=EtcdSettings)
    nats: NatsSettings = attrs.field(factory=NatsSettings)
    redis: RedisSettings = attrs.field(factory=RedisSettings)
    http: HttpSettings = attrs.field(factory=lambda: HttpSettings(addr="127.0.0.1:8085"))
    redis_user_svc_prefix: str = setting("rtcus", help="prefix of Redis keys (user status, rooms)")
    api_token: str = setting(
        "dev-api-token",
        secret=True,
        help="bearer token of app servers (create users of any role, list, kick, mute): svc_rooms' API_TOKEN",
    )
    jwt_secret: str = setting(
        "MY-secret-key-change-in-production", secret=True, help="HS256 key of user JWTs (same as svc_gateway)"
    )
    viewer_token_secret: str = setting(
        "dev-viewer-token-secret-change-in-production",
        secret=True,
        help="HS256 key of HLS viewer tokens (distinct from JWT_SECRET)",
    )
    jwt_expires_in_s: float = setting(
        3600.0, key="jwt_expires_in", parse=at_least(duration, 1), help="lifetime of issued JWTs"
    )
    hls_key_secret: str = setting(
        "dev-hls-key-secret-change-in-production",
        secret=True,
        help="server secret the rooms' AES-128 HLS keys are derived from",
    )
    viewer_token_ttl_s: float = setting(
        900.0, key="viewer_token_ttl", parse=at_least(duration, 1), help="lifetime of HLS viewer tokens"
    )
    user_status_timeout_s: float = setting(
        30.0, key="user_status_timeout", parse=duration, help="a status older than this is cleared"
    )
    room_max_ttl_s: float = setting(
        6 * 3600.0, key="room_max_ttl", parse=duration, help="idle rooms are dropped after this"
    )
    expiry_check_interval_s: float = setting(
        10.0, key="expiry_check_interval", parse=duration, help="period of the status expiry check"
    )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, config_file: str | Path | None = None
    ) -> Config:
        """Defaults, then the config file (``APP_CONFIG_FILE``), then ``env`` (os.environ)."""
        return load_settings(cls, env=env, config_file=config_file)
