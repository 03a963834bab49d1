"""svc_mixer settings: every env name and default of the mixer (the reference system's names).

Kept from the reference: ``MIXER_ID`` (mixer1), ``MIXER_IP`` (field ``host``: the address Janus
forwards RTP to and the heartbeat advertises; 127.0.0.1 instead of "" = auto-detect),
``MIXER_CAPACITY`` (10), ``RTP_PORT_START`` / ``RTP_PORT_END`` (10000-20000), ``KEY_BASE_URL``,
``HLS_DIR``, ``LEASE_TTL`` (5s, see svc_janus.config), ``HTTP_ADDR`` (127.0.0.1:3001), ``ETCD_PREFIX_ROOMS`` /
``ETCD_PREFIX_MIXERS`` and the common blocks.

Changed defaults: ``KEY_BASE_URL`` points at svc_users (which serves the HLS keys in this
project, on 127.0.0.1:8085) instead of the old key server on :3101; ``HLS_DIR`` is
``.run/hls`` (relative to the working directory) instead of ``/hls``.

New: ``STATE_DIR`` (.run/mixer): pid files of the FFmpeg processes this mixer started (so a
restart can kill orphans), the reserved RTP ports, the per-room SDP, key and key info files. It
replaces ``TEMP_DIR`` and ``SDP_DIR``, which are dropped. ``HLS_KEY_SECRET``: the server secret
the rooms' AES-128 keys are derived from (common.hlskey; svc_users must have the same one).
``HLS_TIME`` (2s), ``HLS_LIST_SIZE`` (5), ``HLS_DELETE_GRACE`` (60s: a deleted room's HLS dir
stays this long), ``AUDIO_BITRATE`` (48k), ``AUDIO_CHANNELS`` (1), ``FFMPEG_BIN`` (ffmpeg),
``FFMPEG_STOP_TIMEOUT`` (2s: the stop's RTCP BYE, then SIGKILL; FFmpeg leaves within ~10 ms
of the BYE, svc_mixer.ffmpeg; the reference waited 5 s after a SIGTERM). ``RTP_PORT_END`` is
exclusive, as in the reference's port manager (``p >= end`` was skipped). ``ETCD_PREFIX_MIXER`` is
``ETCD_PREFIX_MIXERS``; the etcd keepalive/TLS/size keys, ``HTTP_TLS_*`` and ``OTEL_*`` are
dropped as dead (see svc_rooms.config).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

from common.config import (
    AppSettings,
    ConfigError,
    EtcdSettings,
    HttpSettings,
    NatsSettings,
    at_least,
    duration,
    integer,
    load_settings,
    port,
    setting,
    url,
)

__all__ = ["Config"]


def _one_of_ints(*allowed: int) -> Callable[[object], int]:
    """An integer setting restricted to ``allowed`` (common.config's ``choice`` is for strings)."""

    def parse(raw: object) -> int:
        value = int(integer(raw))
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(map(str, allowed))}")
        return value

    parse.__name__ = "integer"
    return parse


@attrs.frozen(kw_only=True)
class Config:
    app: AppSettings = attrs.field(factory=AppSettings)
    etcd: EtcdSettings = attrs.field(factory=EtcdSettings)
    nats: NatsSettings = attrs.field(factory=NatsSettings)
    http: HttpSettings = attrs.field(factory=lambda: HttpSettings(addr="127.0.0.1:3001"))
    mixer_id: str = setting("mixer1", help="module id of this mixer (heartbeat key, room assignment)")
    host: str = setting("127.0.0.1", key="mixer_ip", help="address Janus forwards RTP to; advertised")
    mixer_capacity: int = setting(10, parse=at_least(integer, 1), help="rooms (FFmpeg processes) taken")
    rtp_port_start: int = setting(10000, parse=port, help="first RTP port of the pool")
    rtp_port_end: int = setting(20000, parse=port, help="end of the RTP port pool (exclusive)")
    key_base_url: str = setting(
        "http://127.0.0.1:8085/hls/rooms/",
        parse=url("http", "https"),
        help="base of the AES-128 key URI written into playlists",
    )
    hls_dir: str = setting(".run/hls", help="directory FFmpeg writes HLS playlists and segments into")
    state_dir: str = setting(".run/mixer", help="pid files, port reservations, SDP and key files")
    hls_key_secret: str = setting(
        "dev-hls-key-secret-change-in-production",
        secret=True,
        help="server secret the rooms' AES-128 HLS keys are derived from (same as svc_users)",
    )
    hls_time_s: float = setting(2.0, key="hls_time", parse=at_least(duration, 0.5), help="HLS segment length")
    hls_list_size: int = setting(5, parse=at_least(integer, 2), help="segments listed in the live playlist")
    hls_delete_grace_s: float = setting(
        60.0, key="hls_delete_grace", parse=duration, help="a deleted room's HLS dir is removed after this"
    )
    audio_bitrate: str = setting("48k", help="AAC bitrate of the HLS audio (FFmpeg syntax, e.g. 48k)")
    audio_channels: int = setting(1, parse=at_least(integer, 1), help="channels of the HLS audio (1 = mono)")
    audio_sample_rate: int = setting(
        24000,
        parse=_one_of_ints(16000, 22050, 24000, 32000, 44100, 48000),
        help="sample rate of the HLS audio: 24000 carries voice up to ~11 kHz for ~18 % less CPU than 48000",
    )
    ffmpeg_bin: str = setting("ffmpeg", help="FFmpeg executable (name on PATH or a path)")
    ffmpeg_stop_timeout_s: float = setting(
        2.0, key="ffmpeg_stop_timeout", parse=at_least(duration, 0.1), help="stop (RTCP BYE) -> SIGKILL delay"
    )
    # etcd grants leases in whole seconds
    lease_ttl_s: float = setting(
        5.0, key="lease_ttl", parse=at_least(duration, 1), help="heartbeat lease TTL (>= 1s)"
    )

    def __attrs_post_init__(self) -> None:
        if self.rtp_port_end < self.rtp_port_start:
            raise ConfigError(
                f"RTP_PORT_END={self.rtp_port_end} is below RTP_PORT_START={self.rtp_port_start}",
                variable="RTP_PORT_END",
            )
        if self.rtp_port_end < self.rtp_port_start + 2 + self.rtp_port_start % 2:
            raise ConfigError(
                f"RTP_PORT_END={self.rtp_port_end} leaves no even port pair after "
                f"RTP_PORT_START={self.rtp_port_start}",
                variable="RTP_PORT_END",
            )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, config_file: str | Path | None = None
    ) -> Config:
        """Defaults, then the config file (``APP_CONFIG_FILE``), then ``env`` (os.environ)."""
        return load_settings(cls, env=env, config_file=config_file)
