"""Each service Config: loads from an empty env with the documented defaults; its own rules."""

from __future__ import annotations

import importlib
from typing import Any

import attrs
import pytest

from common.config import AppSettings, ConfigError, describe_settings
from svc_gateway.config import Config as GatewayConfig
from svc_janus.config import Config as JanusConfig
from svc_mixer.config import Config as MixerConfig
from svc_rooms.config import Config as RoomsConfig
from svc_users.config import Config as UsersConfig

# development mode accepts the known default secrets, so rules can be checked one at a time
DEV = {"APP_ENV": "development"}

ALL = [RoomsConfig, JanusConfig, MixerConfig, GatewayConfig, UsersConfig]

COMMON = {
    "APP_ENV": "production",
    "APP_SHUTDOWN_TIMEOUT": "10s",
    "APP_LOG_CONFIG_FILE": "",
    "ETCD_ENDPOINTS": "127.0.0.1:2379",
    "ETCD_USERNAME": "",
    "ETCD_DIAL_TIMEOUT": "5s",
    "ETCD_PREFIX_ROOMS": "/rooms/",
    "ETCD_PREFIX_JANUSES": "/januses/",
    "ETCD_PREFIX_MIXERS": "/mixers/",
    "NATS_SERVERS": "nats://127.0.0.1:4222",
    "NATS_CONNECT_TIMEOUT": "5s",
    "NATS_REQUEST_TIMEOUT": "5s",
    "NATS_DRAIN_TIMEOUT": "5s",
}
REDIS = {
    "REDIS_ADDR": "127.0.0.1:6379",
    "REDIS_USERNAME": "",
    "REDIS_DB": "0",
    "REDIS_TLS": "false",
    "REDIS_MAX_CONNECTIONS": "32",
}

DOCUMENTED: dict[type, dict[str, str]] = {
    RoomsConfig: {
        **COMMON,
        "HTTP_ADDR": "127.0.0.1:3000",
        "HLS_ADV_URL": "http://127.0.0.1:8080/hls/",
        "API_TOKEN": "***",
        "HOUSEKEEPING_INTERVAL": "30s",
        "ROOM_MAX_AGE": "10800s",
        "ROOM_REMOVING_GRACE": "60s",
        "ROOM_START_TIMEOUT": "600s",
        "ETCD_PREFIX_SLOTS": "/slots/",
        "ETCD_PREFIX_OUTBOX": "/outbox/",
        "MODULE_GRACE_PERIOD": "15s",
        **REDIS,
        "REDIS_USER_SVC_PREFIX": "rtcus",
    },
    JanusConfig: {
        **COMMON,
        "HTTP_ADDR": "127.0.0.1:3002",
        "JANUS_ID": "janus1",
        "JANUS_ADV_HOST": "127.0.0.1",
        "JANUS_WS_URL": "ws://127.0.0.1:8188",
        "JANUS_CAPACITY": "10",
        "JANUS_REQUEST_TIMEOUT": "10s",
        "ADMIN_SECRET": "***",
        "ALLOW_RTP_PARTICIPANTS": "true",
        "LEASE_TTL": "5s",
        "MONITOR_INTERVAL": "5s",
        "KEEPALIVE_INTERVAL": "15s",
    },
    MixerConfig: {
        **COMMON,
        "HTTP_ADDR": "127.0.0.1:3001",
        "MIXER_ID": "mixer1",
        "MIXER_IP": "127.0.0.1",
        "MIXER_CAPACITY": "10",
        "RTP_PORT_START": "10000",
        "RTP_PORT_END": "20000",
        "KEY_BASE_URL": "http://127.0.0.1:8085/hls/rooms/",
        "HLS_DIR": ".run/hls",
        "STATE_DIR": ".run/mixer",
        "HLS_KEY_SECRET": "***",
        "HLS_TIME": "2s",
        "HLS_LIST_SIZE": "5",
        "HLS_DELETE_GRACE": "60s",
        "AUDIO_BITRATE": "48k",
        "AUDIO_CHANNELS": "1",
        "AUDIO_SAMPLE_RATE": "24000",
        "FFMPEG_BIN": "ffmpeg",
        "FFMPEG_STOP_TIMEOUT": "2s",
        "LEASE_TTL": "5s",
    },
    GatewayConfig: {
        **COMMON,
        **REDIS,
        "WS_HTTP_ADDR": "127.0.0.1:8081",
        "REDIS_USER_SVC_PREFIX": "rtcus",
        "JWT_SECRET": "***",
        "JANUS_TOKEN_KEY": "***",
        "JANUS_WS_PORT": "8188",
        "ALLOWED_ORIGINS": "*",
        "CONN_LOCK_TTL": "30s",
        "WS_PING_INTERVAL": "10s",
        "SERVER_HEARTBEAT_TTL": "3s",
        "JANUS_REQUEST_TIMEOUT": "10s",
        "JANUS_KEEPALIVE_INTERVAL": "20s",
        "USERS_REQUEST_TIMEOUT": "2s",
        "WS_RATE_PER_S": "20",
        "WS_RATE_BURST": "40",
    },
    UsersConfig: {
        **COMMON,
        **REDIS,
        "HTTP_ADDR": "127.0.0.1:8085",
        "REDIS_USER_SVC_PREFIX": "rtcus",
        "API_TOKEN": "***",
        "JWT_SECRET": "***",
        "VIEWER_TOKEN_SECRET": "***",
        "JWT_EXPIRES_IN": "3600s",
        "HLS_KEY_SECRET": "***",
        "VIEWER_TOKEN_TTL": "900s",
        "USER_STATUS_TIMEOUT": "30s",
        "ROOM_MAX_TTL": "21600s",
        "EXPIRY_CHECK_INTERVAL": "10s",
    },
}
SECRETS = {
    RoomsConfig: ["API_TOKEN"],
    JanusConfig: ["ADMIN_SECRET"],
    MixerConfig: ["HLS_KEY_SECRET"],
    GatewayConfig: ["JWT_SECRET", "JANUS_TOKEN_KEY"],
    UsersConfig: ["API_TOKEN", "JWT_SECRET", "VIEWER_TOKEN_SECRET", "HLS_KEY_SECRET"],
}


@pytest.mark.parametrize("cls", ALL)
def test_loads_with_documented_defaults_in_development(cls: Any) -> None:
    config = cls.from_env(DEV)
    assert config == attrs.evolve(cls(), app=AppSettings(env="development"))
    shown = {i.env: i.default for i in describe_settings(cls) if not i.env.endswith("_PASSWORD")}
    assert shown == DOCUMENTED[cls]
    assert all(i.help for i in describe_settings(cls))


@pytest.mark.parametrize("cls", ALL)
def test_shutdown_timeout_and_addresses_are_typed(cls: Any) -> None:
    config = cls.from_env({**DEV, "APP_SHUTDOWN_TIMEOUT": "1m", "ETCD_ENDPOINTS": "a:1,b:2"})
    assert config.app.shutdown_timeout_s == 60.0
    assert config.etcd.endpoints == ["a:1", "b:2"]


@pytest.mark.parametrize("cls", ALL)
def test_hosts_default_to_loopback(cls: Any) -> None:
    for info in describe_settings(cls):
        assert "0.0.0.0" not in info.default
        assert "localhost" not in info.default


@pytest.mark.parametrize("cls", ALL)
def test_outside_development_each_default_secret_is_refused(cls: Any) -> None:
    real = {name: "x" * 32 for name in SECRETS[cls]}
    assert cls.from_env({"APP_ENV": "production", **real}).app.env == "production"
    assert cls.from_env(real).app.env == "production", "production is the default mode"
    for name in SECRETS[cls]:
        others = {k: v for k, v in real.items() if k != name}
        for env in ({"APP_ENV": "production", **others}, others):
            with pytest.raises(ConfigError, match=f"^{name} is left at its known development default"):
                cls.from_env(env)


@pytest.mark.parametrize("cls", ALL)
def test_secrets_not_in_repr(cls: Any) -> None:
    env = {name: f"s3cret-{i:025d}" for i, name in enumerate(SECRETS[cls])}
    config = cls.from_env(env)
    for value in env.values():
        assert value not in repr(config)


def test_mixer_rules() -> None:
    config = MixerConfig.from_env(
        {**DEV, "MIXER_IP": "10.0.0.5", "RTP_PORT_START": "30000", "RTP_PORT_END": "30010"}
    )
    assert (config.host, config.rtp_port_start, config.rtp_port_end) == ("10.0.0.5", 30000, 30010)
    with pytest.raises(ConfigError, match=r"^RTP_PORT_END=100 is below RTP_PORT_START=10000$"):
        MixerConfig.from_env({**DEV, "RTP_PORT_END": "100"})
    with pytest.raises(ConfigError, match=r"^RTP_PORT_START='70000': port out of range"):
        MixerConfig.from_env({**DEV, "RTP_PORT_START": "70000"})
    with pytest.raises(ConfigError, match=r"^MIXER_CAPACITY='0': expected at least 1"):
        MixerConfig.from_env({**DEV, "MIXER_CAPACITY": "0"})
    with pytest.raises(ConfigError, match=r"^KEY_BASE_URL='/hls/'"):
        MixerConfig.from_env({**DEV, "KEY_BASE_URL": "/hls/"})
    assert MixerConfig.from_env({**DEV, "AUDIO_SAMPLE_RATE": "48000"}).audio_sample_rate == 48000
    with pytest.raises(ConfigError, match=r"^AUDIO_SAMPLE_RATE='12345': expected one of 16000, "):
        MixerConfig.from_env({**DEV, "AUDIO_SAMPLE_RATE": "12345"})


def test_janus_rules() -> None:
    assert JanusConfig.from_env({**DEV, "LEASE_TTL": "2s"}).lease_ttl_s == 2.0
    with pytest.raises(ConfigError, match=r"^LEASE_TTL='500ms': expected at least 1s"):
        JanusConfig.from_env({**DEV, "LEASE_TTL": "500ms"})
    with pytest.raises(ConfigError, match=r"^JANUS_WS_URL='http://x:8088'"):
        JanusConfig.from_env({**DEV, "JANUS_WS_URL": "http://x:8088"})


def test_gateway_token_key_must_be_32_bytes() -> None:
    assert GatewayConfig.from_env({**DEV, "JANUS_TOKEN_KEY": "k" * 32}).janus_token_key == "k" * 32
    with pytest.raises(ConfigError, match=r"^JANUS_TOKEN_KEY=<secret, 31 chars>: expected exactly 32 bytes$"):
        GatewayConfig.from_env({**DEV, "JANUS_TOKEN_KEY": "k" * 31})
    assert GatewayConfig.from_env({**DEV, "ALLOWED_ORIGINS": "http://a, http://b"}).allowed_origins == [
        "http://a",
        "http://b",
    ]


@pytest.mark.parametrize("name", ["svc_rooms", "svc_janus", "svc_mixer", "svc_gateway", "svc_users"])
def test_main_modules_import(name: str) -> None:
    module = importlib.import_module(f"{name}.__main__")
    assert callable(module.main)
