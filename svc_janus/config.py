"""svc_janus settings: every env name and default of the Janus manager (the reference system's names).

Kept from the reference: ``JANUS_ID`` (janus1), ``JANUS_ADV_HOST`` (127.0.0.1 instead of the
container name; the host put in the heartbeat), ``JANUS_CAPACITY`` (10), ``ADMIN_SECRET`` (the
AudioBridge ``admin_key``; refused at its default unless APP_ENV=development), ``CANARY_ROOM_ID``
(999999), ``LEASE_TTL`` (5s; the reference had 10 s: a kill -9 is seen sooner, so the rooms of a
dead module move within 20 s with svc_rooms' 15 s grace), ``HTTP_ADDR`` (127.0.0.1:3002, not 8080:
nginx owns 127.0.0.1:8080 here),
``ETCD_PREFIX_ROOMS`` / ``ETCD_PREFIX_JANUSES`` and the common blocks. The reference constants
monitor interval 5 s and keepalive 15 s became ``MONITOR_INTERVAL`` and ``KEEPALIVE_INTERVAL``
(the keepalive is also capped at a third of the session timeout Janus reports); the 10 s Janus
request timeout became ``JANUS_REQUEST_TIMEOUT`` (also how long start-up waits for Janus).

``JANUS_CAPACITY`` (10): rooms this Janus takes. Measured (`just bench janus`, 2-core box, see
docs/svc_janus.md): one AudioBridge room with a forwarder costs Janus about 2.5 % of a core with
one plain-RTP speaker and 4.5 % with three, so a 2-core box running Janus alone takes ~26 rooms
of three speakers at 60 % load, ~16 next to the mixers (3 % per room); 10 keeps room for the
extra cost of WebRTC (DTLS/SRTP) participants, which the plain-RTP figure does not include.

New: ``JANUS_WS_URL`` (ws://127.0.0.1:8188): this project talks to Janus over its WebSocket API,
so ``JANUS_BASE_URL`` (the HTTP transport, http://janus:8088) is dropped.
``ALLOW_RTP_PARTICIPANTS`` (true): rooms accept plain-RTP participants (dial-in bridges, file
players, tests) that know the pin. ``CANARY_ROOM_ID`` is gone: restarts are noticed by listing
the rooms (a lost room is the symptom that matters) and by the session being lost.
Also dropped as dead: the etcd keepalive/TLS/size keys, ``HTTP_TLS_*`` and ``OTEL_*`` (see
svc_rooms.config).
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
    at_least,
    boolean,
    duration,
    integer,
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
    http: HttpSettings = attrs.field(factory=lambda: HttpSettings(addr="127.0.0.1:3002"))
    janus_id: str = setting("janus1", help="module id of this Janus (heartbeat key, room assignment)")
    janus_adv_host: str = setting("127.0.0.1", help="host advertised in the heartbeat")
    janus_ws_url: str = setting(
        "ws://127.0.0.1:8188", parse=url("ws", "wss"), help="Janus WebSocket API of the managed Janus"
    )
    janus_capacity: int = setting(10, parse=at_least(integer, 1), help="rooms this Janus takes")
    janus_request_timeout_s: float = setting(
        10.0, key="janus_request_timeout", parse=duration, help="timeout of one Janus API request"
    )
    admin_secret: str = setting("supersecret", secret=True, help="AudioBridge admin_key")
    allow_rtp_participants: bool = setting(
        True, parse=boolean, help="rooms accept plain-RTP participants that know the pin"
    )
    # etcd grants leases in whole seconds
    lease_ttl_s: float = setting(
        5.0, key="lease_ttl", parse=at_least(duration, 1), help="heartbeat lease TTL (>= 1s)"
    )
    monitor_interval_s: float = setting(
        5.0, key="monitor_interval", parse=duration, help="period of the Janus room check (restart detection)"
    )
    keepalive_interval_s: float = setting(
        15.0, key="keepalive_interval", parse=duration, help="Janus session keepalive period"
    )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, config_file: str | Path | None = None
    ) -> Config:
        return load_settings(cls, env=env, config_file=config_file)
